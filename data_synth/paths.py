"""Where spellfix finds its Hydra configs.

The configs live once, in the repository's ``conf/`` directory, and both import
packages read them from there (``data_synth`` for noise profiles, ``spellfix`` for
everything else). The project is installed in editable mode (``make setup``), so the
directory sits next to the packages; ``SPELLFIX_CONF_DIR`` points elsewhere when a
deployment keeps its configs apart from the code.
"""

import os
from pathlib import Path

CONF_DIR = Path(
    os.environ.get("SPELLFIX_CONF_DIR", Path(__file__).resolve().parent.parent / "conf")
)
