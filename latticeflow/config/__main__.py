"""``python -m latticeflow.config > docs/config.md``."""

from . import reference_markdown

print(reference_markdown(), end="")
