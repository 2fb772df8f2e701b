"""The script a ``sagemaker.pytorch.PyTorch`` estimator names as its ``entry_point``.

SageMaker copies ``experiments/sagemaker`` (this directory) and the estimator's
``dependencies`` (``spellfix/``, ``data_synth/``, ``conf/``) side by side into
``/opt/ml/code`` and runs this file there; the packages import from that directory and
``spellfix.sagemaker.main`` does the rest. Lightning re-runs this same file for the
extra local ranks of a DDP job, which is why it stays a plain script.
"""

import sys
from pathlib import Path

CODE_DIR = Path(__file__).resolve().parent
if (CODE_DIR / "spellfix").is_dir():  # inside the job; locally the installed package is used
    sys.path.insert(0, str(CODE_DIR))

from spellfix.sagemaker import main  # noqa: E402

if __name__ == "__main__":
    main()
