"""Experiment runners behind the book's chapters: each returns tidy tables (pandas) and
figures' data; chapters set parameters, call, assert and plot."""
