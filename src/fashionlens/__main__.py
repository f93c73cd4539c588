"""``python -m fashionlens`` (also what ``torchrun -m fashionlens`` runs)."""

import sys

from fashionlens.cli import main

sys.exit(main())
