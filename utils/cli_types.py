"""argparse value types shared by the command-line tools (eval.py, retrieve.py, utils.export)."""
import argparse
import json


def json_object(text: str) -> dict:
    """argparse type: a JSON object such as '{"out_channels": 1024}'."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"out_channels\": 1024}}', got {text!r}")
    return value
