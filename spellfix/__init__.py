"""Train, tune and ship seq2seq (BART) spell correctors for short search queries.

The path through the package follows the data: ``spellfix.data`` batches pairs made by
``data_synth``, ``spellfix.model`` trains BART on them, ``spellfix.train`` drives a run,
``spellfix.export`` turns the model into ONNX / TensorRT / a Triton repository, and
``spellfix.correct`` / ``spellfix.serve`` answer queries with it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spellfix")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
