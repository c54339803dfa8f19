"""Access-token ids (``jti``): UUIDv7 (RFC 9562 §5.7), so that each new token's row lands at the
end of its primary-key index. They must stay unique and unguessable in their random part."""

from __future__ import annotations

import time
import uuid

from grantd.crypto.secrets import new_token_id


def test_a_token_id_is_a_version_7_uuid_of_now() -> None:
    before = time.time_ns() // 1_000_000
    token_id = uuid.UUID(new_token_id())
    after = time.time_ns() // 1_000_000
    assert token_id.version == 7 and token_id.variant == uuid.RFC_4122
    assert before <= token_id.int >> 80 <= after  # the first 48 bits: Unix time in milliseconds


def test_token_ids_are_unique_and_sort_by_time() -> None:
    first = [new_token_id() for _ in range(10_000)]
    time.sleep(0.002)
    later = new_token_id()
    assert len(set(first)) == len(first)
    assert later > max(first)  # a later millisecond sorts after, as text too
    # 74 random bits: within one millisecond the ids are not a counter
    random_parts = {uuid.UUID(i).int & ((1 << 62) - 1) for i in first}
    assert len(random_parts) == len(first)
