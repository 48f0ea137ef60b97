"""Helpers the video models share."""

import pytest
import torch

from bufferanytime.models.base import stack_chunks


@pytest.mark.parametrize("channels_last", [False, True])
def test_stack_chunks_equals_cat_and_keeps_the_layout(channels_last):
    """Chunks written into one window are torch.cat of them, in the chunks' memory format."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    chunks = [torch.randn(n, 3, 4, 5).contiguous(memory_format=layout) for n in (4, 4, 3)]
    window = stack_chunks(iter(chunks), 11)
    assert torch.equal(window, torch.cat(chunks))
    assert window.is_contiguous(memory_format=layout)
    assert window.is_contiguous() != channels_last


def test_stack_chunks_refuses_a_wrong_frame_count():
    with pytest.raises(ValueError, match="hold 7 frames, expected 8"):
        stack_chunks([torch.zeros(4, 2), torch.zeros(3, 2)], 8)
