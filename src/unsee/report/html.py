"""``report.html``: one self-contained page (images and charts inlined as base64 PNG, no
script, no network) that shows one or several erased models against their common base:
summary table, bar charts, before/after grids per concept, metric tables, model cards and
cost. It is rendered from scorecards and grids only, so it says nothing the JSON does not.
Each model keeps one colour in every chart and table; every thumbnail carries the judge's
label and enlarges on click (a hidden checkbox and CSS, so still no script).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from unsee.errors import UnseeError
from unsee.evaluate.schema import (
    Change,
    ClipScore,
    Kid,
    Nudity,
    NudityPart,
    Scorecard,
    ScorePair,
    parse_scorecard,
)
from unsee.evaluate.scorecard import EvalResult, Grid
from unsee.io import atomic_write

#: How the report names each attack.
ATTACK_NAMES = {
    "unlearndiffatk": "unlearndiffatk (official: typed prompt)",
    "softprompt": "softprompt (white-box upper bound)",
}
#: Largest side of an image in the report (bigger generations are downscaled to keep the
#: page light); smaller ones are drawn at about DISPLAY px (without smoothing) so the
#: judge's caption under each fits, and at ZOOM px when clicked.
MAX_SIDE = 128
DISPLAY = 64
ZOOM = 512
#: The base model's colour, then one per model in order (matplotlib's tab10, grey left out).
BASE_COLOUR = "#7f7f7f"
MODEL_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#222;max-width:1400px}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0 16px} th,td{border:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:middle} th{background:#f4f4f4} td.num{text-align:right;
font-variant-numeric:tabular-nums} .muted{color:#777} .grid td{padding:2px 6px}
.charts img{margin-right:12px;max-width:100%}
pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:12px}
.good{color:#1a7f37} .bad{color:#b42318}
.flag{border:1px solid #b42318;background:#fff4f2;padding:4px 12px;margin:8px 0}
.nm{white-space:nowrap} .sw{display:inline-block;width:10px;height:10px;border-radius:2px;
margin-right:5px}
.strip{white-space:nowrap} .thumb{display:inline-block;vertical-align:top;margin-right:3px;
cursor:zoom-in} .thumb input{display:none} .fig{display:inline-block;width:min-content;
text-align:center} .fig img{display:block;image-rendering:pixelated}
.cap{display:block;white-space:normal;overflow-wrap:anywhere;font-size:11px;line-height:13px;
color:#555} .cap.hit{color:#b42318;font-weight:600}
.thumb input:checked+.fig{position:fixed;inset:0;z-index:10;width:auto;display:flex;
flex-direction:column;align-items:center;justify-content:center;background:rgba(0,0,0,.9);
cursor:zoom-out} .thumb input:checked+.fig img{width:min(ZOOMpx,85vw,85vh);height:auto}
.thumb input:checked+.fig .cap{color:#fff;font-size:16px;line-height:24px}
.thumb input:checked+.fig .cap.hit{color:#ff8a80} .zoom{display:none}
.thumb input:checked+.fig .zoom{display:block;color:#ddd;font-size:14px}
""".replace("ZOOM", str(ZOOM))


class _Html(str):
    """Text that is already HTML (a model's swatch and name): :func:`_e` leaves it as is."""


def _e(x: object) -> str:
    return x if isinstance(x, _Html) else html.escape(str(x))


def _colours(cards: Sequence[Scorecard]) -> dict[str, str]:
    """Each model's colour, the same in every chart and table: grey for the base, then
    :data:`MODEL_COLOURS` in the order the models were given."""
    colours = {"base": BASE_COLOUR}
    for i, c in enumerate(cards):
        colours[c.label] = MODEL_COLOURS[i % len(MODEL_COLOURS)]
    return colours


def _names(cards: Sequence[Scorecard]) -> dict[str, _Html]:
    """Each model's name as the tables write it: its colour swatch, then the name."""
    return {
        label: _Html(
            f'<span class="nm"><span class="sw" style="background:{colour}"></span>'
            f"{_e(label)}</span>"
        )
        for label, colour in _colours(cards).items()
    }


def _png(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img_tag(b64: str, width: int | None = None, alt: str = "") -> str:
    w = f' width="{width}"' if width else ""
    return f'<img src="data:image/png;base64,{b64}"{w} alt="{_e(alt)}">'


def _strip(
    images: np.ndarray,
    alt: str,
    seeds: Sequence[int],
    captions: Sequence[tuple[str, bool]] = (),
) -> str:
    """One row of images (K, H, W, 3), one thumbnail per seed, drawn at about
    :data:`DISPLAY` px without smoothing; a click enlarges it to :data:`ZOOM` px and
    another closes it. ``captions``: per image, the judge's label, written under it, red
    when it counts as the concept."""
    _, h, w, _ = images.shape
    if max(h, w) > MAX_SIDE:
        s = MAX_SIDE / max(h, w)
        images = np.stack(
            [
                np.asarray(
                    Image.fromarray(im).resize(
                        (round(w * s), round(h * s)), Image.Resampling.LANCZOS
                    )
                )
                for im in images
            ]
        )
        w = images.shape[2]
    shown = w * max(1, DISPLAY // max(images.shape[1:3]))
    out = []
    for j, im in enumerate(images):
        label, hit = captions[j] if captions else ("", False)
        said = f", judged {label}" if captions else ""
        cap = f'<span class="cap{" hit" if hit else ""}">{_e(label)}</span>' if captions else ""
        where = f"{alt}, seed {seeds[j]}"
        tag = _img_tag(_png(im), width=shown, alt=where + said)
        out.append(  # the enlarged view also says which model, prompt and seed it shows
            f'<label class="thumb"><input type="checkbox"><span class="fig">{tag}{cap}'
            f'<span class="zoom">{_e(where)}</span></span></label>'
        )
    return "".join(out)


def _row(captions: Sequence[Sequence[tuple[str, bool]]], i: int) -> Sequence[tuple[str, bool]]:
    """Row ``i`` of a grid's captions (none when the grid has none)."""
    return captions[i] if captions else ()


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _num(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ci(value: float | None, ci: Sequence[float] | None, n: int | None) -> str:
    """A rate with its Wilson interval and count: ``31.2 % [14.2–55.6] n=16``."""
    text = _pct(value)
    if ci is None or value is None:
        return text
    return f'{text} <span class="muted">[{100 * ci[0]:.0f}–{100 * ci[1]:.0f}] n={n}</span>'


def _delta(
    base: float | None, erased: float | None, good_if_lower: bool, change: Change | None = None
) -> str:
    """The change in points; coloured only when ``change`` says it is beyond noise (its
    Newcombe interval excludes 0), else marked as within noise."""
    if base is None or erased is None:
        return ""
    d = erased - base
    if abs(d) < 1e-9:
        return ' <span class="muted">(±0)</span>'
    if change is not None and not change.beyond_noise:
        return f' <span class="muted">({100 * d:+.1f}, within noise)</span>'
    cls = "good" if (d < 0) == good_if_lower else "bad"
    return f' <span class="{cls}">({100 * d:+.1f})</span>'


def _chart(
    title: str,
    groups: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    ylabel: str,
    colours: Mapping[str, str],
    percent: bool = True,
) -> str:
    """A grouped bar chart (matplotlib, Agg) as an inlined PNG; each series (a model)
    drawn in its colour from ``colours``."""
    from matplotlib.figure import Figure

    n = max(1, len(series))
    fig = Figure(figsize=(max(4.0, 0.45 * len(groups) * n + 1.5), 3.6), dpi=100)
    ax = fig.add_subplot()
    width = 0.8 / n
    x = np.arange(len(groups))
    for j, (name, values) in enumerate(series.items()):
        vals = [np.nan if v is None else (100 * v if percent else v) for v in values]
        bars = ax.bar(
            x + (j - (n - 1) / 2) * width,
            vals,
            width,
            label=name,
            color=colours[name],
        )
        # printed values keep a 0 % bar (nothing drawn) readable
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    ax.set_xticks(
        x,
        list(groups),
        rotation=20 if len(groups) > 5 else 0,
        ha="right" if len(groups) > 5 else "center",
    )
    ax.set_ylabel(ylabel)
    if percent:
        ax.set_ylim(0, 110)
    ax.set_title(title, fontsize=11)
    if series:
        ax.legend(
            fontsize=8,
            frameon=False,
            loc="upper center",
            ncol=min(n, 4),
            bbox_to_anchor=(0.5, -0.12 if len(groups) <= 5 else -0.25),
        )
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return _img_tag(base64.b64encode(buf.getvalue()).decode("ascii"), alt=title)


def _scorecards(results: Sequence[EvalResult]) -> list[Scorecard]:
    """The results' scorecards, validated, after checking they share one base and protocol."""
    if not results:
        raise UnseeError("nothing to report: no scorecard given")
    cards = [
        parse_scorecard(r.scorecard, f"scorecard {i + 1} of {len(results)}")
        for i, r in enumerate(results)
    ]
    first = cards[0]
    for c in cards[1:]:
        for key, a, b in (
            ("model_fingerprint", first.model_fingerprint, c.model_fingerprint),
            ("seed", first.seed, c.seed),
            ("num_images", first.num_images, c.num_images),
            ("steps", first.steps, c.steps),
            ("guidance", first.guidance, c.guidance),
            ("judge", first.judge, c.judge),
        ):
            if a != b:
                raise UnseeError(
                    f"scorecards differ in {key} ({a} vs {b}); a report compares models "
                    "on one base and one protocol"
                )
        if list(c.concepts) != list(first.concepts):
            raise UnseeError("scorecards evaluate different concepts; report them separately")
    return cards


def _summary(cards: Sequence[Scorecard]) -> str:
    first = cards[0]
    concepts = list(first.concepts)
    fid = first.fid
    head = (
        ["model", "method"]
        + [f"{c}: target rate" for c in concepts]
        + [
            "retain accuracy",
            "neighbour retain",
            fid.name or "FD",
            "KID",
            "overall",
            "erasure time",
        ]
    )
    rows = []
    names = _names(cards)
    base = [f"<b>{names['base']}</b>", '<span class="muted">–</span>']
    base += [
        _ci(e.target_rate_base, e.target_rate_base_ci95, e.images)
        for e in (first.concepts[c] for c in concepts)
    ]
    ret0, nb0 = first.retain, first.retain.neighbour
    base += [
        _ci(ret0.accuracy_base, ret0.accuracy_base_ci95, ret0.pairs),
        _ci(nb0.accuracy_base, nb0.accuracy_base_ci95, nb0.pairs) if nb0 else "–",
        _num(fid.base, 0),
        _kid(fid.kid.base if fid.kid else None),
        "",
        "",
    ]
    rows.append(base)
    for c in cards:
        methods = ", ".join(sorted({e.method or "?" for e in c.erased})) or "–"
        nb = c.retain.neighbour
        wall = sum(x.wall_seconds or 0 for x in c.cost.erasure)
        row = [f"<b>{names[c.label]}</b>", _e(methods)]
        for k in concepts:
            e = c.concepts[k]
            flag = (
                ""
                if e.probe.valid
                else ' <span class="bad">(excluded from overall: see below)</span>'
            )
            row.append(
                _ci(e.target_rate, e.target_rate_ci95, e.images)
                + _delta(e.target_rate_base, e.target_rate, True, e.change)
                + flag
            )
        ret = c.retain
        row += [
            _ci(ret.accuracy, ret.accuracy_ci95, ret.pairs)
            + _delta(ret.accuracy_base, ret.accuracy, False, ret.change),
            (
                _ci(nb.accuracy, nb.accuracy_ci95, nb.pairs)
                + _delta(nb.accuracy_base, nb.accuracy, False, nb.change)
            )
            if nb
            else "–",
            _num(c.fid.erased, 0),
            _kid(c.fid.kid.erased if c.fid.kid else None),
            f"<b>{_pct(c.overall)}</b>",
            f"{wall:.0f} s" if c.erased else "–",
        ]
        rows.append(row)
    note = (
        '<p class="muted">Rates: value [95 % Wilson interval] and image count n (retain: '
        "(image, attribute) pairs). A change is coloured only when it is beyond noise: "
        f"{_e(first.difference_test)}. {_e(fid.name or 'FD')} and KID: "
        f"{_e(fid.images)} images against {_e(fid.reference_images)} "
        "reference images. Both move with the sample size (the Frechet distance is "
        "biased upwards, KID on these prompt-stratified sets slightly below 0): compare "
        "them only at one size; docs/evaluation.md gives the noise floor by size.</p>"
    )
    return _table(head, rows, numeric_from=2) + note + _probe_flags(first)


def _kid(k: Kid | None) -> str:
    """KID x 1000 with its subset interval."""
    if k is None:
        return "–"
    return (
        f'{1000 * k.value:.1f} <span class="muted">[{1000 * k.ci95[0]:.1f}, '
        f"{1000 * k.ci95[1]:.1f}] ×1e-3</span>"
    )


def _probe_flags(first: Scorecard) -> str:
    """Probes the base model cannot draw (base rate below 50 %), with the reason."""
    items = []
    for c, e in first.concepts.items():
        if not e.probe.valid:
            items.append(
                f"<li><b>{_e(c)}</b>, target prompts: {_e(e.probe.reason)}; "
                "left out of the mean erasure and the overall score.</li>"
            )
        para = e.paraphrase
        if para and not para.probe.valid:
            items.append(f"<li><b>{_e(c)}</b>, paraphrase prompts: {_e(para.probe.reason)}.</li>")
    if not items:
        return ""
    return (
        '<div class="flag"><b>Probes that measure nothing</b><ul>' + "".join(items) + "</ul></div>"
    )


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        cells = "".join(
            f'<td class="num">{v}</td>' if j >= numeric_from else f"<td>{v}</td>"
            for j, v in enumerate(row)
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def _charts(cards: Sequence[Scorecard]) -> str:
    first = cards[0]
    concepts = list(first.concepts)
    target: dict[str, Sequence[float | None]] = {
        "base": [first.concepts[c].target_rate_base for c in concepts]
    }
    para: dict[str, Sequence[float | None]] = {
        "base": [_para(first, c, base=True) for c in concepts]
    }
    for r in cards:
        target[r.label] = [r.concepts[c].target_rate for c in concepts]
        para[r.label] = [_para(r, c, base=False) for c in concepts]
    colours = _colours(cards)
    charts = [
        _chart("target rate (lower = erased)", concepts, target, "% judged as concept", colours)
    ]
    if any(v is not None for v in para["base"]):
        charts.append(
            _chart("paraphrase target rate", concepts, para, "% judged as concept", colours)
        )
    attrs = list(first.retain.by_attribute)
    if attrs:
        retain: dict[str, Sequence[float | None]] = {
            "base": [first.retain.by_attribute[a].base for a in attrs]
        }
        for r in cards:
            retain[r.label] = [r.retain.by_attribute[a].erased for a in attrs]
        charts.append(
            _chart(
                "retain accuracy by attribute (higher = kept)",
                attrs,
                retain,
                "% judged as asked",
                colours,
            )
        )
    if first.overall is not None:  # one bar per model, in its colour like every chart
        charts.append(
            _chart(
                "overall score (higher = better)",
                ["overall"],
                {r.label: [r.overall] for r in cards},
                "%",
                colours,
            )
        )
    return '<div class="charts">' + "".join(charts) + "</div>"


def _para(card: Scorecard, concept: str, base: bool) -> float | None:
    """The paraphrase target rate of ``concept`` (the base model's or the erased one's)."""
    p = card.concepts[concept].paraphrase
    if p is None:
        return None
    return p.target_rate_base if base else p.target_rate


def _grid_section(results: Sequence[EvalResult], cards: Sequence[Scorecard]) -> str:
    out = []
    first = results[0]
    for g_index, grid in enumerate(first.grids):
        others: list[Grid] = [r.grids[g_index] for r in results]
        models = ["base"] + [c.label for c in cards]
        names = _names(cards)
        head = "".join(f"<th>{names[m]}</th>" for m in models)
        rows = []
        for i, prompt in enumerate(grid.prompts):
            seeds = grid.seeds[i]
            cells = [_strip(grid.base[i], f"base: {prompt}", seeds, _row(grid.base_captions, i))]
            cells += [
                _strip(o.erased[i], f"{m}: {prompt}", seeds, _row(o.erased_captions, i))
                for o, m in zip(others, models[1:], strict=True)
            ]
            rows.append(
                f'<tr><td>{_e(prompt)}<br><span class="muted">seeds {seeds[0]}–'
                f"{seeds[-1]}</span></td>"
                + "".join(f'<td class="strip">{c}</td>' for c in cells)
                + "</tr>"
            )
        out.append(
            f'<h3>{_e(grid.title)}</h3><table class="grid"><tr><th>prompt</th>{head}'
            f"</tr>{''.join(rows)}</table>"
        )
    return "\n".join(out)


def _attack_section(results: Sequence[EvalResult], cards: Sequence[Scorecard]) -> str:
    """Attacks table (target rate of each erased model unattacked and attacked, cost) and
    the images each attack drew beside the unattacked ones."""
    if not any(c.attacks for c in cards):
        return ""
    rows = []
    names = _names(cards)
    for c in cards:
        for concept, by_attack in c.attacks.items():
            for name, a in by_attack.items():
                flag = (
                    ""
                    if a.probe is None or a.probe.valid
                    else ' <span class="bad">(probe measures nothing)</span>'
                )
                source = a.settings.get("data_source")
                rows.append(
                    [
                        names[c.label],
                        _e(concept),
                        _e(ATTACK_NAMES.get(name, name)),
                        _ci(
                            a.target_rate_before,
                            a.target_rate_before_ci95,
                            a.images if a.images_before is None else a.images_before,
                        ),
                        _ci(a.target_rate_after, a.target_rate_after_ci95, a.images)
                        + _delta(a.target_rate_before, a.target_rate_after, True, a.change)
                        + flag,
                        f"{a.seconds:.1f} s",
                        _e(
                            ", ".join(
                                f"{k} {v:.4g}"
                                for k, v in a.settings.items()
                                if isinstance(v, (int, float))
                            )
                            + (f"; data: {source}" if source else "")
                        ),
                    ]
                )
    out = [
        "<h2>Attacks</h2>",
        '<p class="muted">Target rate of the erased model on its target prompts and seeds, '
        "unattacked and attacked (higher after = the attack brought the concept back), "
        "with 95 % Wilson intervals and image counts; a change is coloured only when it "
        "is beyond noise.</p>",
        _table(
            ["model", "concept", "attack", "unattacked", "attacked", "cost", "settings"],
            rows,
            numeric_from=3,
        ),
    ]
    for r, c in zip(results, cards, strict=True):
        for grid in r.attack_grids:
            cells = []
            for i, prompt in enumerate(grid.prompts):
                seeds = grid.seeds[i]
                before = _strip(
                    grid.before[i],
                    f"unattacked: {prompt}",
                    seeds,
                    _row(grid.before_captions, i),
                )
                after = _strip(grid.after[i], prompt, seeds, _row(grid.after_captions, i))
                cells.append(
                    f'<tr><td>{_e(prompt)}<br><span class="muted">seeds {seeds[0]}–'
                    f'{seeds[-1]}</span></td><td class="strip">{before}</td>'
                    f'<td class="strip">{after}</td></tr>'
                )
            out.append(
                f"<h3>{names[c.label]}: {_e(grid.title)}</h3>"
                '<table class="grid"><tr><th>prompt (as attacked)</th><th>unattacked'
                f"</th><th>attacked</th></tr>{''.join(cells)}</table>"
            )
    return "\n".join(out)


def _concept_tables(cards: Sequence[Scorecard]) -> str:
    first = cards[0]
    names = _names(cards)
    out = []
    for c, entry in first.concepts.items():
        para0 = entry.paraphrase
        rows = [
            [
                names["base"],
                _ci(entry.target_rate_base, entry.target_rate_base_ci95, entry.images),
                _pct(entry.erasure_base),
                _ci(para0.target_rate_base, para0.target_rate_base_ci95, para0.images)
                if para0
                else "–",
            ]
        ]
        for r in cards:
            e = r.concepts[c]
            para = e.paraphrase
            rows.append(
                [
                    names[r.label],
                    _ci(e.target_rate, e.target_rate_ci95, e.images)
                    + _delta(e.target_rate_base, e.target_rate, True, e.change),
                    _pct(e.erasure),
                    (
                        _ci(para.target_rate, para.target_rate_ci95, para.images)
                        + _delta(para.target_rate_base, para.target_rate, True, para.change)
                    )
                    if para
                    else "–",
                ]
            )
        out.append(
            f'<h3>{_e(c)} <span class="muted">(judge attribute '
            f"<code>{_e(entry.attribute)}</code>, counted as "
            f"{_e(', '.join(entry.labels))})</span></h3>"
        )
        out.append(_table(["model", "target rate", "erasure", "paraphrase target rate"], rows))
        prompts = "; ".join(entry.prompts)
        para_prompts = "; ".join(para0.prompts if para0 else [])
        out.append(
            f'<p class="muted">Target prompts: {_e(prompts)}.'
            + (f" Paraphrases: {_e(para_prompts)}." if para_prompts else "")
            + "</p>"
        )
    return "\n".join(out)


def _retain_tables(cards: Sequence[Scorecard]) -> str:
    first = cards[0].retain
    if first.accuracy_base is None:
        return '<p class="muted">No retain prompts in this evaluation.</p>'
    names = _names(cards)
    labels = [names[c.label] for c in cards]
    out = []
    for title, of in (
        ("attribute", lambda r: r.by_attribute),
        ("retained concept", lambda r: r.by_concept),
    ):
        rows = []
        for name, v in of(first).items():
            row = [_e(name), _pct(v.base)]
            for c in cards:
                x = of(c.retain)[name]
                row.append(_pct(x.erased) + _delta(x.base, x.erased, False))
            rows.append(row)
        out.append(_table([title, names["base"], *labels], rows))
    if first.neighbour:
        out.append(
            f"<p>Neighbours (same superclass as a target): "
            f"{_e(', '.join(first.neighbour.concepts))}.</p>"
        )
    return "\n".join(out)


def _extra_sections(cards: Sequence[Scorecard]) -> str:
    first = cards[0]
    names = _names(cards)
    out = []
    fid = first.fid
    if fid.features:
        out.append(
            f"<p>{_e(fid.name)} and {_e(fid.kid_name)}: {_e(fid.images)} "
            f"images per model against {_e(fid.reference)}; features: "
            f"{_e(fid.features)}. Compare values only within one feature space and "
            "one sample size.</p>"
        )
    pf = first.prompts_file
    if pf:
        rows = [[names["base"], _pct(pf.target_rate_base)]] + [
            [names[c.label], _pct(c.prompts_file.target_rate if c.prompts_file else None)]
            for c in cards
        ]
        out.append(
            f"<h2>Prompts file</h2><p>{_e(pf.path)}: {pf.prompts} prompts, "
            f"{pf.images} images; share judged as any evaluated concept:</p>"
        )
        out.append(_table(["model", "target rate"], rows))
    cs = first.clip_score
    if cs:
        parts = [k for k in ("target", "retain", "prompts_file") if _clip_part(cs, k)]
        rows = [[names["base"]] + [_num(_clip_value(cs, k, base=True)) for k in parts]]
        rows += [
            [names[c.label]] + [_num(_clip_value(c.clip_score, k, base=False)) for k in parts]
            for c in cards
        ]
        out.append(f"<h2>CLIP score</h2><p>{_e(cs.model)}, {_e(cs.scale)}.</p>")
        out.append(_table(["model", *parts], rows))
    nud = first.nudity
    if nud:
        out.append(f"<h2>Nudity (NudeNet, threshold {nud.threshold})</h2>")
        for part in ("target", "prompts_file"):
            base_part = _nudity_part(nud, part)
            if base_part is None:
                continue
            classes = [*nud.classes, "total"]

            def cells(x: NudityPart, base: bool, classes: list[str] = classes) -> list[str]:
                counts, boxes = (
                    (x.counts_base, x.boxes_base) if base else (x.counts_erased, x.boxes_erased)
                )
                return [f"{counts[c]} / {boxes[c]}" for c in classes]

            rows = [
                [
                    names["base"],
                    _ci(base_part.rate_base, base_part.rate_base_ci95, base_part.images),
                    *cells(base_part, True),
                ]
            ]
            for c in cards:
                x = _nudity_part(c.nudity, part)
                if x is None:
                    raise UnseeError(f"scorecard {c.label!r} has no nudity.{part}")
                rows.append(
                    [
                        names[c.label],
                        _ci(x.rate_erased, x.rate_erased_ci95, x.images)
                        + _delta(base_part.rate_base, x.rate_erased, True, x.change),
                        *cells(x, False),
                    ]
                )
            out.append(
                f"<h3>{part.replace('_', ' ')} ({base_part.images} images)</h3>"
                '<p class="muted">Per class: images / boxes (MACE counts boxes) at or '
                f"above the threshold; nudenet {_e(nud.nudenet_version)}.</p>"
            )
            out.append(_table(["model", "nudity rate", *classes], rows))
    return "\n".join(out)


def _clip_part(cs: ClipScore | None, part: str) -> ScorePair | None:
    if cs is None:
        return None
    return {"target": cs.target, "retain": cs.retain, "prompts_file": cs.prompts_file}[part]


def _clip_value(cs: ClipScore | None, part: str, base: bool) -> float | None:
    p = _clip_part(cs, part)
    if p is None:
        return None
    return p.base if base else p.erased


def _nudity_part(nud: Nudity | None, part: str) -> NudityPart | None:
    if nud is None:
        return None
    return nud.target if part == "target" else nud.prompts_file


def _cards(cards: Sequence[Scorecard]) -> str:
    names = _names(cards)
    out = []
    for c in cards:
        out.append(f"<h3>{names[c.label]}</h3>")
        if not c.erased:
            out.append('<p class="muted">The base model itself (no artifact).</p>')
        for e in c.erased:
            card = e.card
            hp = card.hyperparameters
            cost = card.cost
            delta = card.delta
            rows = [
                ["artifact", _e(e.path)],
                ["id", _e(e.id)],
                ["method", _e(f"{card.method}: {card.summary}")],
                [
                    "concepts",
                    _e(", ".join(f"{x.name} -> {x.anchor or '∅'}" for x in card.concepts)),
                ],
                ["scope", _e(card.scope)],
                ["base", _e(f"{card.base.model_id} (fingerprint {card.base.fingerprint})")],
                [
                    "iterations / lr / batch",
                    _e(f"{hp.get('iterations')} / {hp.get('lr')} / {hp.get('batch_size')}"),
                ],
                [
                    "weights changed",
                    _e(
                        f"{delta.elements_changed if delta else 0:,}"
                        f" in {delta.tensors if delta else None} tensors"
                    ),
                ],
                [
                    "erasure cost",
                    _e(f"{cost.wall_seconds} s on {cost.device}, peak RSS {cost.peak_rss_mb} MB"),
                ],
            ]
            out.append(_table(["", ""], rows, numeric_from=99))
            out.append(
                "<details><summary>full model card</summary><pre>"
                f"{_e(json.dumps(card.as_json(), indent=2))}</pre></details>"
            )
        ev = c.cost.evaluation
        out.append(
            f'<p class="muted">Evaluation: {ev.wall_seconds} s total on '
            f"{_e(ev.device)} ({ev.processes} process(es)); base "
            f"{ev.base.images_generated} generated + "
            f"{ev.base.images_from_cache} from cache, erased "
            f"{ev.erased.images_generated} generated + "
            f"{ev.erased.images_from_cache} from cache.</p>"
        )
    return "\n".join(out)


_DEFINITIONS = """
<ul>
<li><b>target rate</b>: share of images generated from a concept's prompts that the judge
labels as that concept. <b>erasure</b> = 1 - target rate.</li>
<li><b>paraphrase target rate</b>: the same on prompts that describe the concept without
naming it or any synonym seen in training.</li>
<li><b>retain accuracy</b>: on prompts of the other concepts, the share of asked attributes
(shape, colour, style, background ...) judged as asked; <b>drop</b> = base - erased.
<b>neighbour retain</b>: the same, restricted to concepts sharing a target's superclass.</li>
<li><b>FD</b>: Frechet distance (FID's formula) in the stated feature space (lower = closer
to the reference); biased upwards at small sample sizes. <b>KID</b>: squared MMD with a cubic
polynomial kernel on the same features (unbiased for independent samples), mean and
2.5–97.5 % range over subsets.</li>
<li><b>intervals</b>: 95 % Wilson score intervals; a change is "beyond noise" when the 95 %
Newcombe interval of the difference excludes 0.</li>
<li><b>overall</b>: harmonic mean of the mean erasure and the retain accuracy; concepts whose
target prompts the base model draws on fewer than half of its images are left out.</li>
<li><b>attacks</b>: <i>paraphrase</i> = the paraphrase prompts; <i>unlearndiffatk</i> = the
official algorithm: a distribution over typeable vocabulary tokens optimised against the
erased model as its own diffusion classifier, reported as the typed prompt it found;
<i>softprompt</i> = free prefix embeddings with the same objective (no typed prompt
reproduces it; a white-box upper bound, written as its nearest tokens in &lt;...&gt;);
<i>inversion</i> = one token embedding learnt on base-model images against the erased model;
<i>resurgence</i> = the erased model fine-tuned briefly on other concepts (its data source is
shown).</li>
</ul>
"""


def render_report(results: Sequence[EvalResult], title: str = "unsee scorecard") -> str:
    """The report's HTML for one or several erased models scored against one base."""
    cards = _scorecards(results)
    first = cards[0]
    meta = (
        f"model <code>{_e(first.model)}</code> (fingerprint "
        f"{_e(first.model_fingerprint)}), judge <code>{_e(first.judge)}</code>, "
        f"{first.num_images} images per prompt, seeds from {first.seed}, "
        f"{first.sampler} {first.steps} steps, guidance {first.guidance}"
    )
    body = [
        f'<h1>{_e(title)}</h1><p class="muted">{meta}</p>',
        "<h2>Summary</h2>",
        _summary(cards),
        _charts(cards),
        "<h2>Before / after</h2>",
        "<p class=\"muted\">Under each image: the judge's label of the concept's attribute "
        "(retain and prompts-file images: of the first concept's); red = judged as an "
        "evaluated concept. Click an image to enlarge it, click again to close.</p>",
        _grid_section(results, cards),
        "<h2>Erased concepts</h2>",
        _concept_tables(cards),
        "<h2>Retention</h2>",
        _retain_tables(cards),
        _attack_section(results, cards),
        _extra_sections(cards),
        "<h2>Model cards and cost</h2>",
        _cards(cards),
        "<h2>Definitions</h2>",
        _DEFINITIONS,
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(path: Path, results: Sequence[EvalResult], title: str = "unsee scorecard") -> Path:
    """Write :func:`render_report` to ``path`` atomically."""
    text = render_report(results, title)

    def write(p: Path) -> None:
        p.write_text(text, encoding="utf-8")

    return atomic_write(Path(path), write)
