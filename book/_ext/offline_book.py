"""Small fixes to the HTML pages of the book (a local Sphinx extension, see _config.yml).

sphinx-thebe registers its inline configuration script twice with this Jupyter Book version,
so every page declared ``const THEBE_JS_URL`` twice and the browser reported a SyntaxError. The
book does not use Thebe (live code runs in Colab or Binder instead), so its scripts are dropped.
"""

from __future__ import annotations


def _drop_thebe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if scripts is None:
        return
    kept = []
    for script in scripts:
        body = getattr(script, "attributes", {}).get("body", "") or ""
        if "THEBE_JS_URL" in body or "sphinx-thebe.js" in str(getattr(script, "filename", script)):
            continue
        kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _drop_thebe)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
