"""``auth hash-token``: the line a principals file stores for a bearer token."""

from __future__ import annotations

import argparse
import sys

from remediator.cli.common import EXIT_OK, EXIT_USAGE, CliError, with_examples
from remediator.domain.auth import MIN_TOKEN_CHARS, hash_token

__all__ = ["register"]

EXAMPLES = with_examples(
    """\
    # a new random token for alice, kept in a file only she can read
    umask 077; openssl rand -base64 32 | tr -d '\\n' > alice.token
    remediator auth hash-token < alice.token    # prints sha256:d540f7f7d02e555cb381ec6b...
    """,
    notes=f"""\
    Paste the printed line under the principal's `tokens:` in the principals file
    (auth.principals_file, docs/security.md); give the token itself to its holder only.
    The token is read from standard input, never from an argument (arguments show in
    `ps` and in shell history). Surrounding whitespace and the final newline are not part
    of it. Tokens must be random and at least {MIN_TOKEN_CHARS} characters: the file keeps
    a fast SHA-256 hash, which only a high-entropy token makes safe to store.
    """,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    auth = sub.add_parser(
        "auth",
        help="Credentials for the principals file.",
        epilog=with_examples("remediator auth hash-token < alice.token"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    auth_sub = auth.add_subparsers(dest="auth_command", metavar="SUBCOMMAND", required=True)
    hashed = auth_sub.add_parser(
        "hash-token",
        help="Print the sha256:<hex> line a principals file stores for a token (from stdin).",
        description="Read a bearer token from standard input and print the line a principals "
        "file stores for it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hashed.set_defaults(func=cmd_hash_token)


def cmd_hash_token(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        print("remediator: paste the token, then press Ctrl-D", file=sys.stderr)
    token = sys.stdin.read().strip()
    if not token:
        raise CliError("no token on standard input", code=EXIT_USAGE)
    if any(c.isspace() or not c.isprintable() or not c.isascii() for c in token):
        raise CliError(
            "the token must be one word of visible ASCII characters (as an HTTP header "
            "carries it): no spaces, line breaks or control characters",
            code=EXIT_USAGE,
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise CliError(
            f"the token has {len(token)} characters; use a random one of at least "
            f"{MIN_TOKEN_CHARS} (e.g. `openssl rand -base64 32`)",
            code=EXIT_USAGE,
        )
    print(hash_token(token))
    return EXIT_OK
