"""Block Kit limits (https://api.slack.com/reference/block-kit/blocks), as assertions."""

from __future__ import annotations

import json
from typing import Any

from tests.env.slack import _check_blocks

TEXT_TYPES = ("plain_text", "mrkdwn")


def assert_valid_blocks(blocks: list[dict[str, Any]]) -> None:
    assert _check_blocks(blocks) is None  # what the Slack stand-in accepts
    assert 0 < len(blocks) <= 50
    json.dumps(blocks)  # JSON-able: no tuples of models, no datetimes
    for block in blocks:
        kind = block["type"]
        if kind == "header":
            assert block["text"]["type"] == "plain_text"
            assert 0 < len(block["text"]["text"]) <= 150
        elif kind == "section":
            if "text" in block:
                assert block["text"]["type"] in TEXT_TYPES
                assert 0 < len(block["text"]["text"]) <= 3000
            fields = block.get("fields", [])
            assert len(fields) <= 10
            for field in fields:
                assert field["type"] in TEXT_TYPES
                assert 0 < len(field["text"]) <= 2000
            assert "text" in block or fields
        elif kind == "context":
            assert 0 < len(block["elements"]) <= 10
            for element in block["elements"]:
                assert element["type"] in TEXT_TYPES
                assert 0 < len(element["text"]) <= 3000
        elif kind == "actions":
            assert 0 < len(block["elements"]) <= 25
        else:
            assert kind == "divider", kind
