"""sqlray: fine-tune, tune, serve and evaluate small Text2SQL LLMs on Ray.

One import name over the repository's folders (pyproject maps ``sqlray`` onto the repository root):
``sqlray.core`` and ``sqlray.text2sql`` are the shared core; ``sqlray.training``, ``sqlray.evaluation``,
``sqlray.serving`` and ``sqlray.cluster`` depend on it (and evaluation <- training, evaluation <- serving),
never the other way; ``sqlray.cli`` puts the workloads' subcommands together.
"""
__version__ = "0.1.0"
