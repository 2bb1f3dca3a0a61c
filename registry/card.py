"""Model cards: a Markdown page per registered version, for the people who decide to rely on it.

A card is written at registration from the source run (its validation metrics,
per class, and its data record), and written again when the version is promoted,
from the held-out evaluation the gates just made (per class and per value of the
policy's ``report_by`` columns, e.g. per district).

Storage: a text artifact of the version's source run, ``model_cards/<model>/v<N>[-<stage>].md``
(``MlflowClient.log_text``: the same artifact store as the model, so S3 in team
mode), with its URI and SHA-256 as version tags ``civicml.model_card`` and
``civicml.model_card.sha256``; the card is verified against that digest when read.
Not a version tag (tags are for short values) and not the version description
(5000 characters on SQL stores; it holds a two-line summary instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from civicml.tags import TAG_RULES_CHECKED, TAG_RULES_FIDELITY
from registry.equity import FOUR_FIFTHS

SMALL_GROUP = 30  # rows: figures on fewer are flagged as unreliable
WEAK_RECALL = 0.8
RULES_TARGET = 0.9  # fidelity the surrogate rules should reach on the held-out set


@dataclass
class Evaluation:
    """Figures about one version on one data set."""

    source: str  # e.g. "held-out set service_requests-holdout (500 rows, fingerprint ab12...)"
    task: str
    metrics: dict[str, float] = field(default_factory=dict)
    per_class: pd.DataFrame | None = None  # index label; precision, recall, f1, rows
    per_group: dict[str, pd.DataFrame] = field(default_factory=dict)  # column -> table (index value)
    # figures on other held-out sets (the promotion's gates measured them): what they say -> {metric, value,
    # set, rows}, e.g. "wording it never saw" (registry.gates.UnseenPhrasings); and the equity gates' per-group
    # figures: "equity by <column>" -> {"kind": "equity", ...} (registry.equity.EquityReport.to_dict)
    also: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the trivial baseline on the same rows: {"what": "always answering 'roads' ...", metric: value, ...}
    baseline: dict[str, Any] = field(default_factory=dict)


def headline(evaluation: Evaluation) -> list[str]:
    """One line per other held-out set, beside the same metric on the main one: "accuracy 0.97 on the
    held-out set; 0.73 on wording it never saw (400 rows of service_requests-unseen)"."""
    lines = []
    for what, figure in _figures(evaluation.also).items():
        metric, value = figure["metric"], figure["value"]
        main = evaluation.metrics.get(metric)
        first = f"{metric} {main:.2f} on the held-out set; " if main is not None else f"{metric} "
        lines.append(f"- {first}{value:.2f} on {what} ({figure.get('rows', '?')} rows of {figure.get('set', '?')})")
    return lines


def evaluate(y_true, y_pred, frame: pd.DataFrame, task: str, source: str, report_by=()) -> Evaluation:
    """Per-class and per-group figures of predictions ``y_pred`` against ``y_true`` on ``frame``."""
    from sklearn import metrics as skm

    from projects.metrics import compute

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    out = Evaluation(source, task)
    if task == "classification":
        y_true, y_pred = y_true.astype(str), y_pred.astype(str)
        labels = sorted(set(y_true) | set(y_pred))
        p, r, f, n = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
        out.per_class = pd.DataFrame({"precision": p, "recall": r, "f1": f, "rows": n}, index=labels)
        out.metrics = {m: compute(m, y_true, y_pred) for m in ("accuracy", "macro_f1")}
    else:
        err = np.abs(y_pred.astype(float) - y_true.astype(float))
        out.metrics = {m: compute(m, y_true, y_pred) for m in ("mae", "rmse")}
    out.baseline = trivial_baseline(y_true, task, tuple(out.metrics))
    for column in report_by:
        if column not in frame.columns:
            continue
        groups = frame[column].reset_index(drop=True)
        if task == "classification":
            hit = pd.Series(y_true == y_pred)
            table = hit.groupby(groups).agg(["mean", "size"]).rename(columns={"mean": "accuracy", "size": "rows"})
        else:
            table = pd.Series(err).groupby(groups).agg(["mean", "size"]).rename(columns={"mean": "mae",
                                                                                          "size": "rows"})
        out.per_group[column] = table
    return out


def trivial_baseline(y_true, task: str, metrics: tuple[str, ...]) -> dict[str, Any]:
    """What answering without looking scores on the same rows: the held-out set's most common answer for every
    row (classification), its median for every row (regression); {} for no rows."""
    from projects.metrics import compute

    y_true = np.asarray(y_true)
    if not len(y_true):
        return {}
    if task == "classification":
        values, counts = np.unique(y_true.astype(str), return_counts=True)
        answer = str(values[int(np.argmax(counts))])
        answers = np.array([answer] * len(y_true), dtype=object).astype(str)
        what = f"always answering {answer!r}, the most common answer in these rows"
    else:
        answer = float(np.median(y_true.astype(float)))
        answers = np.full(len(y_true), answer)
        what = f"always answering {answer:.4g}, the median of these rows"
    return {"what": what, **{m: float(compute(m, y_true, answers)) for m in metrics}}


def from_run_metrics(metrics: dict[str, float], task: str, source: str) -> Evaluation:
    """What the training run logged: overall metrics and per-class recall (validation split)."""
    out = Evaluation(source, task, {k: float(v) for k, v in metrics.items()
                                    if not k.startswith("recall_") and k not in ("fit_seconds", "model_size_bytes")})
    recalls = {k[len("recall_"):]: float(v) for k, v in metrics.items() if k.startswith("recall_")}
    if recalls:
        out.per_class = pd.DataFrame({"recall": list(recalls.values())}, index=list(recalls))
    return out


def rules_of(tags: dict[str, str]) -> dict[str, Any] | None:
    """The surrogate rules' fidelity a version records (:mod:`registry.rules`), or None."""
    value = tags.get(TAG_RULES_FIDELITY)
    try:
        return None if value is None else {"fidelity": float(value), "checked": tags.get(TAG_RULES_CHECKED)}
    except ValueError:
        return None


def _rules_block(rules: dict[str, Any] | None, limitations: list[str]) -> list[str]:
    lines = ["", "## Rules for decision makers", ""]
    if rules is None:
        return lines + ["No rules were extracted for this version (registered without a held-out set, or the "
                        "extraction failed and the registration said why)."]
    fidelity, checked = rules["fidelity"], rules.get("checked") or "held-out rows"
    lines.append("A shallow decision tree fitted to this version's own answers gives readable if/then rules "
                 "(`rules.md` beside the version's run, and the console).")
    if fidelity >= RULES_TARGET:
        lines.append(f"- fidelity on the held-out set: {fidelity:.3f} ({checked} the rules never saw); "
                     f"meets the {RULES_TARGET} target.")
    else:
        lines.append(f"- fidelity on the held-out set: {fidelity:.3f} ({checked} the rules never saw): below the "
                     f"{RULES_TARGET} target; the rules reached {fidelity:.3f}.")
        limitations.append(f"The extracted rules agree with the model only to {fidelity:.3f} (target "
                           f"{RULES_TARGET}): read them as a rough guide to its behaviour, not as a description of it.")
    return lines


def render(*, name: str, version: str, intended_use: str, facts: dict[str, Any], data: dict[str, Any] | None,
           evaluation: Evaluation | None, stage: str, rules: dict[str, Any] | None = None) -> str:
    """The card as Markdown; ``rules``: :func:`rules_of` the version's tags."""
    lines = [f"# Model card: {name} version {version}", "",
             f"*{stage}; written by CivicML.*", "", "## Intended use", "", intended_use, "",
             "Out of scope: any use other than the one above, and decisions about individual people, "
             "unless a new evaluation shows it fits.", "", "## Model", ""]
    lines += [f"- **{k}**: {v}" for k, v in facts.items() if v not in (None, "")]
    lines += _data_block(data)
    limitations: list[str] = []
    lines += _metrics_block(evaluation, limitations)
    lines += _rules_block(rules, limitations)
    limitations += ["Figures describe the evaluation data only; requests that differ from it (new districts, "
                    "channels, phrasing, seasons) may fare worse.",
                    "Personal data is masked before training; free text may still hold personal details the "
                    "masking did not recognise."]
    lines += ["", "## Limitations", ""] + [f"- {item}" for item in limitations]
    return "\n".join(lines) + "\n"


def _data_block(data: dict[str, Any] | None) -> list[str]:
    lines = ["", "## Data sources", ""]
    if not data:
        return lines + ["- not recorded by the source run"]
    lines.append(f"- data fingerprint: `{data.get('fingerprint', '?')}`")
    for source in data.get("sources", []) or []:
        lines.append(f"- source: `{source}`")
    cleaning = {k: v for k, v in (data.get("cleaning") or {}).items() if v}
    if cleaning:
        lines.append("- cleaning: " + ", ".join(f"{k} {v}" for k, v in cleaning.items()))
    return lines


def _metrics_block(evaluation: Evaluation | None, limitations: list[str]) -> list[str]:
    """The card's figures; what they show about its limits is added to ``limitations``."""
    lines = ["", "## Metrics", ""]
    if evaluation is None:
        return lines + ["No figures recorded."]
    lines += [f"Source: {evaluation.source}.", ""]
    lines += [f"- {k}: {v:.4f}" for k, v in sorted(evaluation.metrics.items())]
    if evaluation.baseline:
        base = evaluation.baseline
        lines.append(f"- trivial baseline ({base['what']}): " + ", ".join(
            f"{k} {v:.4f}" for k, v in sorted(base.items()) if k != "what"))
    if _figures(evaluation.also):
        lines += ["", "### Beyond the held-out set", ""] + headline(evaluation)
        for what, figure in _figures(evaluation.also).items():
            main = evaluation.metrics.get(figure["metric"])
            if main is not None and figure["value"] < main - 0.05:
                limitations.append(f"On {what}, {figure['metric']} falls from {main:.2f} to "
                                   f"{figure['value']:.2f}: expect more misrouted requests worded unlike "
                                   f"the training data.")
    if evaluation.per_class is not None:
        lines += ["", "### Per class", "", _table(evaluation.per_class, "class")]
        weak = evaluation.per_class.index[evaluation.per_class["recall"] < WEAK_RECALL].tolist()
        if weak:
            limitations.append(f"Recall below {WEAK_RECALL} for: {', '.join(map(str, weak))}; requests of "
                               f"these classes are misrouted more often.")
    for column, table in evaluation.per_group.items():
        lines += ["", f"### Per {column}", "", _table(table, column)]
        limitations += _group_limits(column, table)
    for table in evaluation.also.values():
        if table.get("kind") == "equity":
            lines += equity_block(table, limitations)
    if not evaluation.per_group:
        limitations.append("No per-group figures in this revision (the promotion card adds them for the "
                           "policy's report_by columns).")
    return lines


def _figures(also: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The figures on other held-out sets, without the equity gates' per-group tables."""
    return {what: figure for what, figure in also.items() if figure.get("kind") != "equity"}


def equity_block(table: dict[str, Any], limitations: list[str]) -> list[str]:
    """The equity gates' figures per group (:meth:`registry.equity.EquityReport.to_dict`, with the policy's
    ``min_ratio``, ``max_group_regression`` and ``champion_version``); what they show goes to ``limitations``."""
    column, metric, groups = table["column"], table["metric"], table["groups"]
    champion, floor = table.get("champion_version"), table.get("min_ratio")
    lines = ["", f"### Equity by {column}", "",
             f"{metric} per {column} on the held-out rows, with {table['confidence']:.0%} bootstrap intervals "
             f"({table['resamples']} seeded draws of each {column}'s rows); the ratio is each {column}'s figure "
             f"over the best's ({table.get('best') or 'none'}). A {column} under {table['min_count']} rows is "
             f"reported, never judged." + (f" Floor: {floor} of the best." if floor is not None else "")
             + (f" At most {table['max_group_regression']} worse than under champion v{champion}." if champion
                else ""), ""]

    def span(pair):
        return "-" if pair is None else f"{pair[0]:.3f}-{pair[1]:.3f}"

    def number(value, fmt=".3f"):
        return "-" if value is None else format(value, fmt)

    columns = ["rows", metric, "interval", "ratio to best", "ratio interval"] + (
        [f"champion v{champion}", "worse by", "worse interval"] if champion else []) + ["judged"]
    lines += [f"| {column} | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for g in groups:
        cells = [str(g["rows"]), number(g["value"]), span(g["interval"]), number(g.get("ratio")),
                 span(g.get("ratio_interval"))]
        if champion:
            cells += [number(g.get("champion")), number(g.get("worse_by"), "+.3f"), span(g.get("worse_interval"))]
        cells.append("yes" if g["judged"] else f"no: under {table['min_count']} rows")
        lines.append(f"| {g['group']} | " + " | ".join(cells) + " |")
    limitations += _equity_limits(table, floor if floor is not None else FOUR_FIFTHS)
    return lines


def _equity_limits(table: dict[str, Any], floor: float) -> list[str]:
    column, metric, groups = table["column"], table["metric"], table["groups"]
    out = []
    low = [g for g in groups if g["judged"] and g.get("ratio") is not None and g["ratio"] < floor]
    if low:
        out.append(f"{metric} is lower in " + ", ".join(f"{column} {g['group']} ({g['ratio']:.2f} of the best)"
                                                        for g in low)
                   + f" than in {table.get('best')}: expect more wrong answers there.")
    small = [g for g in groups if not g["judged"]]
    if small:
        out.append(f"Equity by {column} is reported but not judged for " + ", ".join(
            f"{g['group']} ({g['rows']} rows)" for g in small) + f": under {table['min_count']} held-out rows.")
    return out


def _group_limits(column: str, table) -> list[str]:
    out = []
    small = table.index[table["rows"] < SMALL_GROUP].tolist()
    if small:
        out.append(f"Figures for {column} {', '.join(map(str, small))} rest on fewer than {SMALL_GROUP} rows.")
    score = "accuracy" if "accuracy" in table else "mae"
    if len(table) > 1:
        best, worst = (table[score].max(), table[score].min()) if score == "accuracy" else \
            (table[score].min(), table[score].max())
        out.append(f"{score} varies by {column} from {worst:.3f} to {best:.3f}.")
    return out


def summary(evaluation: Evaluation | None, stage: str) -> str:
    """Two lines for the version description (shown by the MLflow UI)."""
    if evaluation is None:
        return f"{stage}. Model card: see tag civicml.model_card."
    figures = ", ".join(f"{k} {v:.4f}" for k, v in sorted(evaluation.metrics.items()))
    return f"{stage}: {figures} ({evaluation.source}).\nModel card: see tag civicml.model_card."


# -- reading a card back (the console shows its facts in plain words) -------------------------------------
def _sections(text: str, level: str) -> dict[str, str]:
    out, name, body = {}, None, []
    for line in text.splitlines():
        if line.startswith(level + " ") and not line.startswith(level + "#"):
            if name is not None:
                out[name] = "\n".join(body).strip()
            name, body = line[len(level) + 1:].strip(), []
        elif name is not None:
            body.append(line)
    if name is not None:
        out[name] = "\n".join(body).strip()
    return out


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read(text: str) -> dict[str, Any]:
    """What :func:`render` wrote, as data: ``intended_use``, ``out_of_scope``, ``limitations`` (list), ``source``,
    ``metrics``
    (name -> value), ``baseline`` ({"what", metric: value} or {}), ``also`` (list of {what, metric, value,
    rows, set}), ``per_group`` (column -> value -> {figure: value}). Missing parts are empty."""
    import re

    top = _sections(text, "##")
    metrics_part = top.get("Metrics", "")
    subs = _sections(metrics_part, "###")
    use = [part.strip() for part in top.get("Intended use", "").split("\n\n")]
    out: dict[str, Any] = {"intended_use": use[0], "out_of_scope": next((part.removeprefix("Out of scope:").strip()
                                                                          for part in use if part.startswith(
                                                                              "Out of scope:")), ""),
                           "limitations": [line[2:].strip() for line in top.get("Limitations", "").splitlines()
                                           if line.startswith("- ")],
                           "source": "", "metrics": {}, "baseline": {}, "also": [], "per_group": {}}
    for line in metrics_part.split("\n###")[0].splitlines():
        if line.startswith("Source: "):
            out["source"] = line[len("Source: "):].rstrip(".")
        elif line.startswith("- trivial baseline ("):
            what, _, figures = line[len("- trivial baseline ("):].rpartition("): ")
            out["baseline"] = {"what": what, **{k: v for k, v in (
                (pair.split(" ")[0], _number(pair.split(" ")[-1])) for pair in figures.split(", ")) if v is not None}}
        elif line.startswith("- ") and ": " in line:
            key, value = line[2:].split(": ", 1)
            if _number(value) is not None:
                out["metrics"][key] = _number(value)
    for line in subs.get("Beyond the held-out set", "").splitlines():
        found = re.match(r"- (\S+) (?:[-\d.]+ on the held-out set; )?([-\d.]+) on (.+) \((\S+) rows of (.+)\)$", line)
        if found:
            out["also"].append({"metric": found[1], "value": float(found[2]), "what": found[3],
                                "rows": found[4], "set": found[5]})
    for heading, body in subs.items():
        rows = [line.strip("|").split("|") for line in body.splitlines() if line.startswith("|")]
        if not heading.startswith("Per ") or heading == "Per class" or len(rows) < 3:
            continue
        names = [c.strip() for c in rows[0]]
        out["per_group"][heading[4:]] = {cells[0].strip(): {n: _number(c.strip()) for n, c in
                                                            zip(names[1:], cells[1:])} for cells in rows[2:]}
    return out


def _table(frame: pd.DataFrame, index_name: str) -> str:
    columns = list(frame.columns)
    rows = [f"| {index_name} | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for idx, row in frame.iterrows():
        cells = [f"{int(v)}" if c == "rows" else f"{float(v):.3f}" for c, v in row.items()]
        rows.append(f"| {idx} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


# -- variants (registry.variant_lookup): one block, always the card's last section ------------------------------
VARIANTS_HEADING = "## Variants"


def variant_cells(v: dict[str, Any]) -> dict[str, str]:
    """One variant's figures (:func:`registry.variant_lookup.summary_of`) as short text, beside its parent's."""
    def num(key, fmt):
        return "-" if v.get(key) is None else format(v[key], fmt)

    quality = "-" if v.get("quality") is None else (
        f"{v['metric']} {v['quality']:.4f} (parent {num('parent_quality', '.4f')})")
    gate = v.get("gate") or "not gated"
    if gate != "passed" and v.get("failed_gates"):
        gate += ": " + "; ".join(v["failed_gates"])
    return {"kind": str(v.get("kind")), "version": str(v.get("version")),
            "size": f"{num('size_bytes', '.0f')} B ({num('size_reduction', '.2f')}x smaller)",
            "p50 b1": f"{num('latency_b1_p50_ms', '.2f')} ms ({num('speedup_b1', '.2f')}x faster)",
            "p50 b64": f"{num('latency_b64_p50_ms', '.2f')} ms ({num('speedup_b64', '.2f')}x faster)",
            "quality": quality, "agreement": num("agreement", ".4f"), "gate": gate}


def variants_section(facts: dict[str, Any]) -> str:
    """What variant a version is, or which variants it has (``registry.variant_lookup.variant_facts``); "" if neither."""
    rows = [facts["variant"]] if facts.get("variant") else list(facts.get("variants") or [])
    if not rows:
        return ""
    lines = [VARIANTS_HEADING, ""]
    if facts.get("variant"):
        v = facts["variant"]
        lines += [f"This version is the `{v['kind']}` variant of version {v['variant_of']}, measured beside it on "
                  f"the held-out set. " + ("Serving chooses it by kind: `civicml serve NAME --variant "
                                            f"{v['kind']}` while version {v['variant_of']} is champion."
                                            if v.get("gate") == "passed" else
                                            "Its gate refused it: it is never served."), ""]
    else:
        lines += ["Compressed or converted copies of this version, measured beside it on the held-out set. Only "
                  "variants whose gate passed are served (`civicml serve NAME --variant KIND`).", ""]
    cells = [variant_cells(v) for v in rows]
    columns = list(cells[0])
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(c[k].replace("|", "/") for k in columns) + " |" for c in cells]
    return "\n".join(lines) + "\n"


def with_variants(text: str, section: str) -> str:
    """``text`` with its variants block replaced by ``section`` (appended last; removed when empty)."""
    start = text.find("\n" + VARIANTS_HEADING + "\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start + 1] + (text[end + 1:] if end >= 0 else "")
    text = text.rstrip("\n") + "\n"
    return text + ("\n" + section if section else "")


read_card = read  # the registry's face name (the console reads a card back)
