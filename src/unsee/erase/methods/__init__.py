"""Every method registers itself on import; one file per method."""

from unsee.erase.methods import esd, uce  # noqa: F401
