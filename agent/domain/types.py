"""The JSON alias every domain module shares."""

from typing import Any

JSON = dict[str, Any]
