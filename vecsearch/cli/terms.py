"""Query terms that may start with '-' (`-dog` subtracts dog), read by a click command."""

from __future__ import annotations

import click


class TermsCommand(click.Command):
    """A command whose query terms may start with '-' (`-dog` subtracts dog), like rclip's.

    Tokens that look like options but are not this command's options are moved behind `--`, where
    click reads them as arguments; their order does not matter to a query.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            split = args.index("--")
            before, after = args[:split], args[split + 1 :]
        else:
            before, after = list(args), []
        takes_value: dict[str, click.Option] = {}
        flags: set[str] = set()
        for param in self.get_params(ctx):
            if isinstance(param, click.Option):
                for name in [*param.opts, *param.secondary_opts]:
                    if param.is_flag or param.count:
                        flags.add(name)
                    else:
                        takes_value[name] = param
        kept: list[str] = []
        moved: list[str] = []
        expect_value: click.Option | None = None
        for token in before:
            if expect_value is not None:
                bare, expect_value = _bare_value(expect_value, token), None
                if bare is None:
                    kept.append(token)
                    continue
                kept[-1] += f"={bare}"  # `--preview cat`: --preview given bare, then a query term
            if not token.startswith("-") or len(token) == 1:
                kept.append(token)
                continue
            name = token.split("=", 1)[0] if token.startswith("--") else token
            if name in flags or (token.startswith("--") and "=" in token and name in takes_value):
                kept.append(token)
            elif name in takes_value:
                kept.append(token)
                expect_value = takes_value[name]
            elif token[:2] in takes_value and _parses(takes_value[token[:2]], token[2:]):
                kept.append(token)
            else:
                moved.append(token)
        if moved or after:
            return super().parse_args(ctx, kept + ["--"] + moved + after)
        return super().parse_args(ctx, kept)


def _bare_value(option: click.Option, following: str) -> str | None:
    """The value a choice option takes when given bare (`--preview` is `--preview=auto`), if `following`
    is not one of its choices; None when `following` is the option's value."""
    if option.is_flag or not isinstance(option.type, click.Choice) or not isinstance(option.flag_value, str):
        return None
    return None if following in option.type.choices else option.flag_value


def _parses(option: click.Option, text: str) -> bool:
    """Is `text` an attached value of a short numeric option (`-k5`)? `-apple` is a term, not `-a pple`."""
    if not isinstance(option.type, (click.types.IntParamType, click.types.FloatParamType, click.IntRange)):
        return False
    try:
        option.type.convert(text, None, None)  # type: ignore[arg-type]  # click types the value as a number already; parsing the text is what is asked
        return True
    except click.BadParameter:
        return False
