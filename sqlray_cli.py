"""`sqlray` console script (subcommands are added in cli modules)."""
def main() -> None:
    from training.cli import main as _main
    _main()
