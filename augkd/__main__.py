"""``python -m augkd`` runs the CLI."""

from augkd.cli import main

if __name__ == "__main__":
    main()
