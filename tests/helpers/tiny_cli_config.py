"""The tiny engine-test search as a config file, for the CLI (tests/test_search.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.helpers.tiny import tiny_config  # noqa: E402


def get_config():
    return tiny_config("reinforce")
