"""A flag table: each flag declared once, with the settings it sets and the group it is shown in.

A row is a `Flag` (or an `Alias` of one); a table is a sequence of `Group`s. From it come
the absl definitions (`define`), the flag -> settings map (`flag_fields`) and the
--helpshort text (`grouped_help`), so a flag cannot be defined without being mapped.
"""
import dataclasses

from absl import flags


@dataclasses.dataclass(frozen=True)
class Flag:
  """One flag: absl's DEFINE_<kind> arguments and the "section.field" settings of
  ExperimentConfig it sets (none for flags that only steer the command)."""
  name: str
  kind: str
  default: object
  help: str
  sets: tuple[str, ...] = ()
  options: tuple[tuple[str, object], ...] = ()


@dataclasses.dataclass(frozen=True)
class Alias:
  """Another name of the flag `target`, setting what it sets."""
  name: str
  target: str


@dataclasses.dataclass(frozen=True)
class Group:
  """Flags shown together by --helpshort, under `title`."""
  title: str
  rows: tuple
  in_short_help: bool = True


KINDS = ("boolean", "string", "integer", "float", "enum", "list")


def flag(name, kind, default, help, sets=(), **options):
  """A Flag row; `options` are the DEFINE_<kind> keywords (enum_values, lower_bound...)."""
  if kind not in KINDS:
    raise ValueError(f"flag {name!r}: kind must be one of {KINDS}. Received: {kind!r}")
  return Flag(name, kind, default, help, tuple(sets), tuple(options.items()))


def alias(name, target):
  return Alias(name, target)


def rows(groups):
  return [row for group in groups for row in group.rows]


def define(groups, flag_values):
  """Defines every row of `groups` in `flag_values`."""
  for row in rows(groups):
    if isinstance(row, Alias):
      flags.DEFINE_alias(row.name, row.target, flag_values=flag_values)
    else:
      define_kind = getattr(flags, f"DEFINE_{row.kind}")
      define_kind(row.name, row.default, help=row.help, flag_values=flag_values,
                  **dict(row.options))


def flag_fields(groups):
  """{flag name: the settings it sets} for the rows that set any; an alias sets its target's."""
  by_name = {row.name: row for row in rows(groups)}
  fields = {}
  for row in by_name.values():
    target = by_name[row.target] if isinstance(row, Alias) else row
    if target.sets:
      fields[row.name] = target.sets
  return fields


def _flag_help(flag_values, name):
  """One flag as absl's help shows it: --[no]name: help, then its default."""
  defined = flag_values[name]
  shown = f"[no]{name}" if defined.boolean else name
  text = f"--{shown}: {defined.help}"
  if defined.default is not None and defined.default != []:
    text += f" (default: {defined.default_as_str})"
  return flags.text_wrap(text, length=100, indent="      ", firstline_indent="  ")


def grouped_help(groups, flag_values, usage):
  """--helpshort: `usage`, then each short-help group's flags in table order."""
  lines = [usage.strip(), ""]
  for group in groups:
    if not group.in_short_help:
      continue
    lines.append(f"{group.title}:")
    for row in group.rows:
      if isinstance(row, Alias):
        lines.append(f"  --{row.name}: the same as --{row.target}.")
      else:
        lines.append(_flag_help(flag_values, row.name))
    lines.append("")
  return "\n".join(lines)
