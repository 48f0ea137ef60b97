"""The Marigold-E2E-FT video normal model, which lives with its family:
:mod:`bufferanytime.families.marigold_e2e_normals`.

Kept so that ``from bufferanytime.models.normal import VideoNormalModel`` goes on working."""

from bufferanytime.families.marigold_e2e_normals import (
    EMBEDDING_KEY,
    EMBEDDING_NAME,
    MODEL_INDEX_NAME,
    PRIOR_ID,
    VideoNormalModel,
    compute_empty_prompt_embedding,
    load_empty_prompt_embedding,
    to_camera_axes,
    write_marigold_prior,
)

__all__ = ["EMBEDDING_KEY", "EMBEDDING_NAME", "MODEL_INDEX_NAME", "PRIOR_ID", "VideoNormalModel",
           "compute_empty_prompt_embedding", "load_empty_prompt_embedding", "to_camera_axes", "write_marigold_prior"]
