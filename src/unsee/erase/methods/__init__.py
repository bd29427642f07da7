"""Every method registers itself on import; one file per method."""

from unsee.erase.methods import esd, kscu, mim_mu, uce  # noqa: F401
