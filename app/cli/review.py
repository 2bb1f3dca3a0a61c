"""civicml review: a person's override of one served answer, audited and kept as the answer's label."""

from __future__ import annotations

import json

from app.cli.common import add_store_options, settings_from


def add_commands(sub) -> None:
    p = sub.add_parser("review", help="override one served answer (role reviewer): the decision is audited on the "
                                      "model and becomes the answer's label for live quality and retraining")
    add_store_options(p)
    p.add_argument("answer_id", metavar="ANSWER_ID", help="the answer's id (its X-CivicML-Answer-Id, 32 hex digits)")
    p.add_argument("--decision", required=True, help="the answer that should have been given (a label, or a "
                                                     "number for a regressor)")
    p.add_argument("--reason", required=True, help="why (audited; e-mails and phone numbers are masked)")
    p.add_argument("--model", help="the model that answered (checked against the recorded answer)")
    p.add_argument("--json", action="store_true", help="print the review as JSON")
    p.set_defaults(func=cmd_review)


def cmd_review(args) -> int:
    from monitoring import review_answer

    done = review_answer(args.answer_id, args.decision, args.reason, model=args.model, settings=settings_from(args))
    print(json.dumps(done.to_dict(), default=str) if args.json else done.text())
    return 0
