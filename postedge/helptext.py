"""Every ``--help`` of the ``postedge`` command in the reader's language.

Two kinds of words make up a help screen, and each gets the simplest hook
that reaches it:

- **Ours** (what a command or an option does) live in
  ``postedge/text_help.toml``, loaded by ``common/text.py`` like every other
  catalogue. :func:`localize` walks the finished parser tree and fills each
  ``help`` and ``description`` from it, keyed by where the thing sits
  (``cmd.gateway.status``, ``opt.gateway.status.config``, falling back to
  ``opt.gateway.config`` and then ``opt.config`` for an option many
  subcommands share). Translating the built tree, rather than each
  ``add_argument`` call, keeps the command modules as they are: a new
  command group only adds catalogue entries, and
  ``tests/cli/test_cli_zh.py`` fails while one is missing. The English text
  in the code is what shows until its entry lands.
- **argparse's own** ("usage:", "positional arguments", "options", "show
  this help message and exit", and its error messages) come from
  ``argparse._``, which argparse calls at the moment it builds a parser or
  prints. :func:`argparse_words` swaps that one name for a lookup in the same
  catalogue (``argparse.*`` entries) while the command line is built and
  parsed, then puts it back.

Why swapping ``argparse._`` and not the other two ways: a ``HelpFormatter``
subclass reaches only the usage prefix; the group titles, the ``-h`` help
and every error message are made outside the formatter. gettext's
``argparse`` domain reaches them all but needs a compiled ``.mo`` file and a
second catalogue format, which the project's one-loader rule
(``common/text.py``) forbids. argparse's messages are keyed by their English
text, so the map from that msgid to our key is here (``_ARGPARSE``); a
message argparse adds in a later Python shows in English until it is added.
The swap is process-global while it lasts; the command line is parsed on
the main thread before anything else starts, so nothing else sees it.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from common.text import LANGS, beside, cells, pick_lang, wrap_cells

HELP = beside(__file__, "text_help.toml")

# The languages of the command lines being parsed, innermost last.
_parse_lang: list[str] = []

# argparse's msgid -> our catalogue key. %-placeholders stay as argparse
# fills them (``%(prog)s``), in both languages.
_ARGPARSE = {
    "usage: ": "argparse.usage",
    "positional arguments": "argparse.positionals",
    "options": "argparse.options",
    "show this help message and exit": "argparse.help",
    "%(prog)s: error: %(message)s\n": "argparse.error",
    "argument %(argument_name)s: %(message)s": "argparse.argument",
    "the following arguments are required: %s": "argparse.required",
    "unrecognized arguments: %s": "argparse.unrecognized",
    "invalid choice: %(value)r (choose from %(choices)s)": "argparse.invalid_choice",
    "invalid %(type)s value: %(value)r": "argparse.invalid_value",
    "expected one argument": "argparse.expected_one",
    "expected at most one argument": "argparse.expected_at_most_one",
    "expected at least one argument": "argparse.expected_at_least_one",
    "ambiguous option: %(option)s could match %(matches)s": "argparse.ambiguous",
    "not allowed with argument %s": "argparse.not_allowed_with",
    "one of the arguments %s is required": "argparse.one_required",
    "ignored explicit argument %r": "argparse.ignored_explicit",
    "unknown parser %(parser_name)r (choices: %(choices)s)": "argparse.unknown_parser",
}


def lang_from_argv(argv: Sequence[str]) -> str:
    """The language before the parser exists: ``--lang X`` / ``--lang=X``
    anywhere before ``--``, else the environment (``common.text.pick_lang``)."""
    given = None
    for i, a in enumerate(argv):
        if a == "--":
            break
        if a == "--lang" and i + 1 < len(argv):
            given = argv[i + 1]
        elif a.startswith("--lang="):
            given = a.split("=", 1)[1]
    return pick_lang(given if given in LANGS else None)


def argparse_text(msgid: str, lang: str) -> str:
    """argparse's own words in ``lang``; one we have no entry for as it is."""
    key = _ARGPARSE.get(msgid)
    return HELP.entries[key][lang] if key is not None else msgid


@contextmanager
def argparse_words(lang: str) -> Iterator[None]:
    """argparse speaks ``lang`` inside the block."""
    saved = argparse._  # type: ignore[attr-defined]
    argparse._ = lambda msgid: argparse_text(msgid, lang)  # type: ignore[attr-defined]
    _parse_lang.append(lang)
    try:
        yield
    finally:
        _parse_lang.pop()
        argparse._ = saved  # type: ignore[attr-defined]


def parse_lang() -> str:
    """The language of the command line being parsed (inside
    :func:`argparse_words`), for an argparse ``type`` function's message;
    outside it, the environment's."""
    return _parse_lang[-1] if _parse_lang else pick_lang()


class CellFormatter(argparse.HelpFormatter):
    """argparse's formatter, measuring in terminal columns: it counts
    characters, so Chinese help wrapped by it runs up to twice the
    terminal's width. Headings end in "：" when they are Chinese."""

    _HEADING = re.compile(r"^( *)(\S*[\u4e00-\u9fff]\S*):$", re.M)

    def _split_lines(self, text: str, width: int) -> list[str]:
        return wrap_cells(text, width)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(indent + line for line in wrap_cells(text, width - cells(indent)))

    def _format_usage(self, usage, actions, groups, prefix):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
        head = prefix if prefix is not None else argparse._("usage: ")  # type: ignore[attr-defined]
        extra = cells(head) - len(head)  # a Chinese "用法：" is wider than its length
        self._width -= extra
        try:
            text = super()._format_usage(usage, actions, groups, prefix)
        finally:
            self._width += extra
        # continuation lines line up under the first argument
        return text if extra <= 0 else re.sub(r"\n( +)", lambda m: "\n" + m[1] + " " * extra, text)

    def format_help(self) -> str:
        return self._HEADING.sub(r"\1\2：", super().format_help())


class EpilogFormatter(CellFormatter):
    """Keeps the epilog's own line breaks (a list of scenarios, exit codes)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(indent + line for line in text.splitlines())


def _opt_name(action: argparse.Action) -> str:
    longs = [s for s in action.option_strings if s.startswith("--")]
    return (longs[0] if longs else action.option_strings[0] if action.option_strings else action.dest
            ).lstrip("-")


def _text(keys: Sequence[str], lang: str) -> str | None:
    for k in keys:
        if k in HELP.entries:
            return HELP.entries[k][lang]
    return None


def option_keys(path: Sequence[str], action: argparse.Action) -> list[str]:
    """Where an option's help is looked up, most specific first."""
    name = _opt_name(action)
    return [".".join(("opt", *path[:n], name)) for n in range(len(path), -1, -1)]


def command_key(path: Sequence[str]) -> str:
    return ".".join(("cmd", *path)) if path else "cmd.postedge"


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
         ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser in the tree with its command path, the root first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk(child, (*path, name))


def untranslated(parser: argparse.ArgumentParser) -> list[str]:
    """Catalogue keys a command or option of the tree has no entry for."""
    missing = []
    for path, p in walk(parser):
        if command_key(path) not in HELP.entries:
            missing.append(command_key(path))
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if action.help is not argparse.SUPPRESS and _text(option_keys(path, action), "en") is None:
                missing.append(option_keys(path, action)[0])
    return missing


def localize(parser: argparse.ArgumentParser, lang: str) -> argparse.ArgumentParser:
    """Fill the tree's help and descriptions from the catalogue in ``lang``.

    Positionals without a metavar get their name in capitals (``SCENARIO``),
    as the others already have (``CODE``, ``FILE``): a placeholder reads as
    one in both languages, never as an English word."""
    for path, p in walk(parser):
        p.formatter_class = CellFormatter
        desc = _text([command_key(path)], lang)
        if desc is not None:
            p.description = desc
        # A command's notes below its options (exit codes, what ships with
        # it): ``epilog.<path>``, filled from the parser's ``epilog_fields``.
        epilog = _text([".".join(("epilog", *path))], lang)
        if epilog is not None:
            p.epilog = epilog.format(**getattr(p, "epilog_fields", {}))
            p.formatter_class = EpilogFormatter
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    text = _text([command_key((*path, choice.dest))], lang)
                    if text is not None:
                        choice.help = text
                continue
            if isinstance(action, argparse._HelpAction) or action.help is argparse.SUPPRESS:
                continue
            text = _text(option_keys(path, action), lang)
            if text is not None:
                action.help = text
            if not action.option_strings and action.metavar is None:
                action.metavar = action.dest.upper()
    return parser
