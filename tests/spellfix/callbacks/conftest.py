"""Make the callback tests' shared toys importable as ``callback_toys``.

The suite runs with ``--import-mode=importlib``, which keeps test directories off
``sys.path``; the toys live in a plain module (not fixtures) because the DDP test
also runs them in processes that Lightning starts, outside pytest.
"""

import importlib.util
import sys
from pathlib import Path

_TOYS_PATH = Path(__file__).with_name("callback_toys.py")

if "callback_toys" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("callback_toys", _TOYS_PATH)
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["callback_toys"] = _module
    _spec.loader.exec_module(_module)
