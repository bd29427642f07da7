"""Every method registers itself on import; one file per method."""

from unsee.erase.methods import ca, esd, kscu, mim_mu, salun, sculpt, uce  # noqa: F401
