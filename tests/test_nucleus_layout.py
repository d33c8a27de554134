"""How the graphed sampler splits a row among programs (CPU: plain arithmetic, no Triton needed): never more
programs than SMs usable at once, since every program of a row must be resident to pass its barriers."""

from __future__ import annotations

import pytest

from yi_cli.kernels import nucleus


@pytest.mark.parametrize(
    "vocab,sms,want",
    [
        (64000, 132, (4096, 16)),  # Yi on an H200
        (49152, 132, (4096, 12)),  # the demo (SmolLM2)
        (64000, 10, (8192, 8)),  # a small GPU, or a small MPS share
        (152064, 132, (8192, 19)),  # a larger vocabulary: at most CTAS programs, so larger blocks
        (100, 132, (4096, 1)),
        (64000, 1, (65536, 1)),
    ],
)
def test_layout(vocab, sms, want):
    assert nucleus.layout(vocab, sms) == want


def test_layout_always_fits():
    for vocab in (1, 4095, 4096, 4097, 32000, 64000, 100352, 256000):
        for sms in (1, 2, 7, 16, 31, 108, 132):
            block, ctas = nucleus.layout(vocab, sms)
            assert ctas <= min(sms, nucleus.CTAS) and block * ctas >= vocab > block * (ctas - 1)
            assert block >= nucleus.BLOCK and block & (block - 1) == 0


@pytest.mark.parametrize(
    "percentage,want", [("", 132), ("50", 66), ("5", 6), ("0.1", 1), ("100", 132), ("150", 132), ("abc", 132)]
)
def test_mps_share(percentage, want):
    assert nucleus.mps_share(132, percentage) == want


def test_usable_sms_off_cuda():
    assert nucleus.usable_sms("cpu") == 1
    assert nucleus.usable_sms("cuda", {"TRITON_INTERPRET": "1"}) == 1


@pytest.mark.parametrize(
    "rows,ctas,sms,want",
    [
        (8, 16, 132, [(0, 8)]),  # a verify's 8 rows on an H200: one launch
        (8, 16, 108, [(0, 6), (6, 2)]),  # an A100: two launches (it was eight)
        (8, 16, 20, [(r, 1) for r in range(8)]),  # one row's programs fill the GPU: a launch a row
        (1, 16, 132, [(0, 1)]),  # a decode step
        (5, 32, 100, [(0, 3), (3, 2)]),
        (3, 1, 1, [(0, 1), (1, 1), (2, 1)]),  # Triton's interpreter: one program at a time
    ],
)
def test_row_groups_hold_as_many_rows_as_fit(rows, ctas, sms, want):
    groups = nucleus.row_groups(rows, ctas, sms)
    assert groups == want
    assert [r for r0, n in groups for r in range(r0, r0 + n)] == list(range(rows))  # each row once, in order
    assert all(n * ctas <= sms or n == 1 for _, n in groups)  # every program of a launch resident
