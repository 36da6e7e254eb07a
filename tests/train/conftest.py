"""Fixtures shared by the training tests."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    # tiny tensors: torch's thread pool only adds contention on a loaded 2-core machine
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
