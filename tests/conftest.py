import os

# One intra-op thread per test process: on a shared 2-core machine thread oversubscription makes
# small property tests tens of times slower. The environment defaults must be set before torch
# (and NumPy's BLAS) start their thread pools; they are inherited by the papermill kernels too.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
