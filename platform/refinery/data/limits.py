"""The limits that reading an untrusted dataset file runs under, from settings (see docs/security.md)."""

from __future__ import annotations

from django.conf import settings

from refinery.data.validate_child import ChildLimits
from refinery.data.validation import DecodeLimits


def decode_limits() -> DecodeLimits:
    return DecodeLimits(
        max_decoded_bytes=settings.REFINERY_DATASET_MAX_DECODED_BYTES,
        max_value_bytes=settings.REFINERY_DATASET_MAX_VALUE_BYTES,
        max_batch_bytes=settings.REFINERY_DATASET_MAX_BATCH_BYTES,
        max_row_group_bytes=settings.REFINERY_DATASET_MAX_ROW_GROUP_BYTES,
    )


def child_limits() -> ChildLimits:
    return ChildLimits(
        memory_bytes=settings.REFINERY_VALIDATION_MEMORY_BYTES,
        timeout_seconds=settings.REFINERY_VALIDATION_TIMEOUT_SECONDS,
    )
