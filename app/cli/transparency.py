"""civicml transparency: a live model's public records (Eurocities, ATRS, EU AI Act Annex IV) from the registry."""

from __future__ import annotations

import json

from app.cli.common import add_store_options, settings_from

FORMATS = ("eurocities", "atrs", "annex-iv")  # registry.TRANSPARENCY_FORMATS (the parser imports no library)


def add_commands(sub) -> None:
    p = sub.add_parser("transparency", help="write the public records of a model's live version from registry "
                                            "facts and the use case's transparency.yaml (docs/accountability.md)")
    add_store_options(p)
    p.add_argument("name", help="registered model name")
    p.add_argument("--format", choices=FORMATS, action="append", dest="formats",
                   help="eurocities (JSON), atrs (JSON + Markdown) or annex-iv (Markdown + HTML); repeat for "
                        "several (default: all three)")
    p.add_argument("--out", default="transparency", metavar="DIR", help="folder to write into (default ./transparency)")
    p.add_argument("--version", dest="ref", default="champion", metavar="REF",
                   help="the version number or alias to describe (default: champion, the live version)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=cmd_transparency)


def cmd_transparency(args) -> int:
    from registry import write_transparency

    settings = settings_from(args)
    formats = tuple(dict.fromkeys(args.formats or FORMATS))
    written = write_transparency(args.name, args.out, formats, args.ref, settings)
    v = written.facts.version
    if args.json:
        print(json.dumps({"model": args.name, "version": v.version, "files": [str(p) for p in written.files],
                          "eurocities_problems": written.eurocities_problems,
                          "to_be_written": written.to_be_written,
                          "transparency_file": str(written.facts.human.path)}, indent=2))
        return 0
    print(f"records of {args.name} version {v.version} -> {', '.join(str(p) for p in written.files)}")
    if written.eurocities_problems:
        print(f"eurocities.json does not meet the standard yet ({len(written.eurocities_problems)}): "
              + "; ".join(written.eurocities_problems))
    if written.to_be_written:
        print(f"{len(written.to_be_written)} field(s) to be written by people in {written.facts.human.path}: "
              + ", ".join(written.to_be_written))
    return 0
