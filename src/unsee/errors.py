"""Errors a user can fix. The CLI prints their message on one line and exits with code 2."""


class UnseeError(Exception):
    """Bad input or configuration: the message says what is wrong and what to do."""


def validation_error(exc: Exception, where: str, sep: str = ": ") -> UnseeError:
    """One line from a pydantic ``ValidationError``: each bad field, what it needs and what it
    got, e.g. ``config: seed must be a valid integer, ... (got 'abc')``; ``sep="."`` names
    fields under ``where`` (``sculpt.density must be ...``)."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return UnseeError(f"{where}: {exc}")
    parts = []
    for err in errors():
        loc = ".".join(str(x) for x in err.get("loc", ())) or "value"
        msg = str(err.get("msg", "is invalid")).replace("Input should", "must")
        got = err.get("input")
        parts.append(
            f"{loc} {msg} (got {got!r})" if err.get("type") != "missing" else f"{loc} is required"
        )
    return UnseeError(f"{where}{sep}" + "; ".join(parts))
