"""Checks of arguments and config fields, shared by both packages (input_pipeline never
imports official_resnet, so they live here): a ValueError naming the argument, what it
must be and what was received, in one wording everywhere."""


def check(ok: bool, name: str, expected: str, value) -> None:
  """ValueError "<name> must be <expected>. Received: <value>" unless `ok`."""
  if not ok:
    raise ValueError(f"{name} must be {expected}. Received: {value!r}")


def check_choice(name: str, value, allowed) -> None:
  check(value in allowed, name, f"one of {tuple(allowed)}", value)


def check_positive(name: str, value, allow_zero: bool = False) -> None:
  check(value > 0 or (allow_zero and value == 0), name, ">= 0" if allow_zero else "> 0", value)


def check_int(name: str, value, minimum: int) -> None:
  """An int (not a bool) >= minimum."""
  check(not isinstance(value, bool) and isinstance(value, int) and value >= minimum, name,
        f"an integer >= {minimum}", value)
