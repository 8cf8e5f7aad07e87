#!/usr/bin/python3
"""Generate edgeloop's license-clean demo corpora, reproducibly.

Everything here is procedural: word lists and templates written for this
project, sampled with seeded `random.Random` streams, so the files are a pure
function of this script (no downloaded text, nothing to license).

Three kinds of text:
  general  English-like text the tiny base model is pretrained on: everyday
           sentences, short stories, simple facts, arithmetic and dialogue.
           Not written to disk by default (pretrain_tiny.py imports
           `general_lines`), because it is regenerated in a second.
  site-a   machine logs and technician notes of a stamping-press line
           ("LINE-A PRESS-07 hydraulic_pressure=182bar ...").
  site-b   a bottling and chemical-mixing line with a different tag format
           ("[B2|FILLER-3|14/03/26 06:12] fill_vol=498.6ml ...").

The site logs carry rules a model can learn (a given alarm calls for a given
action with given numbers), so a LoRA fine-tune has something real to fit.

Usage: make_data.py [--out tools/data] [--general-out FILE --general-lines N]
Writes <out>/site-{a,b}/{train,holdout,anchor}.jsonl.  The anchor split is
general text drawn from a stream the pretraining corpus never uses, and any
line that also occurs in the pretraining corpus is dropped.
"""
import argparse
import json
import os
import random

# ---------------------------------------------------------------------------
# General English-like text
# ---------------------------------------------------------------------------

NAMES = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Henry",
         "Ida", "Jack", "Kate", "Leo", "Mia", "Noah", "Olga", "Paul", "Rosa",
         "Sam", "Tara", "Victor", "Wendy", "Yusuf", "Zoe", "Omar", "Lena",
         "Mark", "Nina", "Hugo", "Elsa", "Ravi"]
HE = {n: "she" for n in ["Anna", "Clara", "Emma", "Grace", "Ida", "Kate",
                         "Mia", "Olga", "Rosa", "Tara", "Wendy", "Zoe",
                         "Lena", "Nina", "Elsa"]}
ANIMALS = [("dog", 4), ("cat", 4), ("horse", 4), ("cow", 4), ("duck", 2),
           ("hen", 2), ("goat", 4), ("sheep", 4), ("owl", 2), ("fox", 4),
           ("rabbit", 4), ("spider", 8), ("ant", 6), ("bee", 6), ("frog", 4)]
ANIMAL_SOUND = {"dog": "barks", "cat": "meows", "horse": "neighs",
                "cow": "moos", "duck": "quacks", "hen": "clucks",
                "goat": "bleats", "sheep": "bleats", "owl": "hoots",
                "fox": "yelps", "rabbit": "sniffs", "spider": "spins a web",
                "ant": "carries food", "bee": "buzzes", "frog": "croaks"}
COLORS = ["red", "blue", "green", "yellow", "white", "black", "brown",
          "orange", "grey", "purple"]
THINGS = ["cup", "book", "hat", "ball", "box", "bag", "key", "lamp", "chair",
          "coat", "bike", "plate", "spoon", "kite", "shoe", "pen", "clock"]
PLACES = ["kitchen", "garden", "park", "school", "library", "market",
          "station", "beach", "forest", "village", "harbour", "farm",
          "bakery", "museum", "river"]
FOODS = ["bread", "soup", "apples", "rice", "cheese", "eggs", "pasta",
         "pears", "cake", "fish", "beans", "tea", "milk", "honey"]
TIMES = ["in the morning", "at noon", "in the evening", "at night",
         "on Monday", "on Friday", "on Sunday", "after lunch",
         "before dinner", "every day", "in the summer", "in the winter"]
VERBS_T = [("reads", "read"), ("carries", "carried"), ("finds", "found"),
           ("buys", "bought"), ("cleans", "cleaned"), ("paints", "painted"),
           ("fixes", "fixed"), ("drops", "dropped"), ("hides", "hid"),
           ("washes", "washed")]
FEELINGS = ["happy", "tired", "hungry", "surprised", "proud", "calm",
            "worried", "excited", "sleepy", "glad"]
WEATHER = ["sunny", "rainy", "windy", "cold", "warm", "foggy", "cloudy",
           "snowy"]
FACTS = [
    "The sun rises in the east and sets in the west.",
    "Water boils at 100 degrees Celsius at sea level.",
    "Water freezes at 0 degrees Celsius.",
    "A week has seven days.",
    "A year has twelve months.",
    "A day has twenty-four hours.",
    "An hour has sixty minutes.",
    "The moon goes around the earth.",
    "The earth goes around the sun.",
    "Plants need water and light to grow.",
    "Fish live in water and breathe with gills.",
    "Birds have feathers and most of them can fly.",
    "Ice is frozen water.",
    "Snow falls when the air is cold.",
    "Bees make honey from flowers.",
    "Trees lose their leaves in the autumn.",
    "The sea tastes of salt.",
    "Rain comes from clouds.",
    "A triangle has three sides.",
    "A square has four equal sides.",
    "Red and yellow make orange.",
    "Blue and yellow make green.",
    "Metal gets warm in the sun.",
    "Bread is made from flour, water and yeast.",
]
MONTHS = ["January", "February", "March", "April", "May", "June", "July",
          "August", "September", "October", "November", "December"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
        "Sunday"]
NUMWORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven",
            "eight", "nine", "ten", "eleven", "twelve"]


def _pron(name):
    return HE.get(name, "he")


def _cap(s):
    return s[0].upper() + s[1:]


def everyday(r):
    n = r.choice(NAMES)
    m = r.choice([x for x in NAMES if x != n])
    t = r.choice(THINGS)
    c = r.choice(COLORS)
    p = r.choice(PLACES)
    v = r.choice(VERBS_T)
    f = r.choice(FOODS)
    forms = [
        f"{n} {v[0]} the {c} {t} in the {p} {r.choice(TIMES)}.",
        f"{n} and {m} eat {f} in the {p} {r.choice(TIMES)}.",
        f"{_cap(r.choice(TIMES))}, {n} walks to the {p} with {m}.",
        f"The {c} {t} is on the table in the {p}.",
        f"{n} cannot find the {c} {t}, so {_pron(n)} asks {m} for help.",
        f"It is {r.choice(WEATHER)} today, and {n} feels "
        f"{r.choice(FEELINGS)}.",
        f"{n} {v[1]} the {c} {t} yesterday, and today "
        f"{_pron(n)} {r.choice(VERBS_T)[0]} it again.",
        f"{n} likes {f}, but {m} likes {r.choice(FOODS)} more.",
        f"After school, {n} plays in the {p} until it gets dark.",
        f"On {r.choice(DAYS)}, {n} goes to the {p} to buy {f}.",
    ]
    return r.choice(forms)


def story(r):
    n = r.choice(NAMES)
    pr = _pron(n)
    a = r.choice(ANIMALS)[0]
    p = r.choice(PLACES)
    t = r.choice(THINGS)
    c = r.choice(COLORS)
    m = r.choice([x for x in NAMES if x != n])
    openings = [f"Once upon a time, {n} lived near the {p}.",
                f"One {r.choice(WEATHER)} day, {n} went to the {p}.",
                f"{n} had a small {a} called {r.choice(NAMES)}."]
    middles = [f"One day {pr} lost a {c} {t}.",
               f"There {pr} met a {a} that {ANIMAL_SOUND[a]} all day.",
               f"{_cap(pr)} wanted to give {m} a {c} {t}.",
               f"The {a} ran away with the {c} {t}."]
    ends = [f"In the end, {m} found it in the {r.choice(PLACES)}.",
            f"{_cap(pr)} looked everywhere and was {r.choice(FEELINGS)} "
            f"when it came back.",
            f"So {pr} and {m} shared {r.choice(FOODS)} and went home.",
            f"That night {pr} slept well and dreamed of the {p}."]
    return " ".join([r.choice(openings), r.choice(middles), r.choice(ends)])


def fact(r):
    a, legs = r.choice(ANIMALS)
    forms = [
        r.choice(FACTS),
        f"A {a} has {NUMWORDS[legs] if legs <= 12 else legs} legs.",
        f"The {a} {ANIMAL_SOUND[a]}.",
        f"{MONTHS[(i := r.randrange(12))]} comes after "
        f"{MONTHS[(i - 1) % 12]}.",
        f"The day after {DAYS[(j := r.randrange(7))]} is "
        f"{DAYS[(j + 1) % 7]}.",
        f"{NUMWORDS[(k := r.randrange(12))].capitalize()} plus one is "
        f"{NUMWORDS[k + 1]}.",
        f"Two {a}s have {2 * legs} legs in total.",
    ]
    return r.choice(forms)


def arithmetic(r):
    x, y = r.randrange(1, 50), r.randrange(1, 50)
    op = r.randrange(4)
    if op == 0:
        return r.choice([f"What is {x} plus {y}? It is {x + y}.",
                         f"{x} + {y} = {x + y}"])
    if op == 1:
        x, y = max(x, y), min(x, y)
        return r.choice([f"What is {x} minus {y}? It is {x - y}.",
                         f"{x} - {y} = {x - y}"])
    if op == 2:
        x, y = x % 13, y % 13
        return r.choice([f"What is {x} times {y}? It is {x * y}.",
                         f"{x} x {y} = {x * y}"])
    n = r.choice(NAMES)
    t = r.choice(FOODS[:9])
    return (f"{n} has {x} {t} and buys {y} more. Now {_pron(n)} has "
            f"{x + y} {t}.")


def dialogue(r):
    a = r.choice(NAMES)
    b = r.choice([x for x in NAMES if x != a])
    t, c, p = r.choice(THINGS), r.choice(COLORS), r.choice(PLACES)
    x, y = r.randrange(2, 20), r.randrange(2, 20)
    forms = [
        f"{a}: Where is the {c} {t}? {b}: It is in the {p}.",
        f"{a}: Are you coming to the {p}? {b}: Yes, I will come "
        f"{r.choice(TIMES)}.",
        f"{a}: How are you today? {b}: I am {r.choice(FEELINGS)}, thank "
        f"you. And you? {a}: I am {r.choice(FEELINGS)}.",
        f"{a}: What is {x} plus {y}? {b}: It is {x + y}.",
        f"{a}: What is the weather like? {b}: It is {r.choice(WEATHER)} "
        f"and the {p} is quiet.",
        f"{a}: Can I borrow your {t}? {b}: Of course, it is the {c} one.",
    ]
    return r.choice(forms)


GENERAL_KINDS = [(everyday, 30), (story, 20), (fact, 18), (arithmetic, 14),
                 (dialogue, 18)]


def general_line(r):
    kinds, weights = zip(*GENERAL_KINDS)
    return r.choices(kinds, weights)[0](r)


def general_lines(n, seed=1):
    """Return n general-text lines from the stream `seed` (1 = pretraining)."""
    r = random.Random(seed)
    return [general_line(r) for _ in range(n)]


# ---------------------------------------------------------------------------
# Site A: stamping-press line (ISO timestamps, key=value sensor tags)
# ---------------------------------------------------------------------------

A_MACHINES = [f"PRESS-{i:02d}" for i in range(1, 13)] + \
             [f"FEEDER-{i:02d}" for i in range(1, 5)] + ["TRANSFER-01",
                                                         "DIE-CART-02"]
A_TECHS = ["J.Kowalski", "M.Ortega", "T.Nguyen", "S.Brandt", "A.Haddad",
           "L.Moreau"]
A_PARTS = ["O-ring", "ram seal", "guide bushing", "pressure hose",
           "limit switch", "proportional valve", "clutch pad", "die clamp"]
# condition -> (status, action template); numbers are tied to the condition
A_RULES = [
    ("ok", "OK", "No action; log reading."),
    ("pressure_high", "WARN",
     "Reduce hydraulic setpoint to 175bar on {m}; inspect relief valve."),
    ("pressure_low", "WARN",
     "Check pump inlet filter on {m}; bleed air from circuit."),
    ("seal_hot", "WARN",
     "Replace O-ring on {m} ram; torque 45 Nm; next check 250 cycles."),
    ("vibration", "ALARM",
     "Stop {m}; check flywheel bearing; grease 12 g; re-run at 60 spm."),
    ("tonnage", "ALARM",
     "Stop {m}; inspect die for slug; reset tonnage monitor to 320t."),
    ("oil_low", "WARN",
     "Top up ISO VG 46 oil on {m} to MAX mark; check for leaks."),
]


def _a_ts(r):
    return (f"2026-{r.randrange(1, 13):02d}-{r.randrange(1, 29):02d}T"
            f"{r.randrange(24):02d}:{r.randrange(60):02d}:"
            f"{r.randrange(60):02d}")


def site_a_log(r, cond=None):
    """One press log line; returns (line, condition key)."""
    m = r.choice(A_MACHINES)
    rule = cond or r.choices(A_RULES, [40, 10, 10, 12, 8, 8, 8])[0]
    key = rule[0]
    pres = r.randrange(160, 176)
    temp = r.randrange(48, 66)
    vib = round(r.uniform(0.8, 2.4), 1)
    ton = r.randrange(240, 300)
    oil = r.randrange(70, 96)
    if key == "pressure_high":
        pres = r.randrange(186, 205)
    elif key == "pressure_low":
        pres = r.randrange(120, 145)
    elif key == "seal_hot":
        temp = r.randrange(70, 88)
    elif key == "vibration":
        vib = round(r.uniform(6.5, 11.0), 1)
    elif key == "tonnage":
        ton = r.randrange(330, 380)
    elif key == "oil_low":
        oil = r.randrange(12, 30)
    fields = [f"hydraulic_pressure={pres}bar", f"seal_temp={temp}C",
              f"vib_rms={vib}mm/s", f"tonnage={ton}t", f"oil_level={oil}%",
              f"spm={r.randrange(20, 65)}", f"cycle={r.randrange(1000, 99999)}"]
    shown = fields[:2] + r.sample(fields[2:], r.randrange(1, 4))
    # the field that explains the condition is always shown
    need = {"vibration": 2, "tonnage": 3, "oil_low": 4}.get(key)
    if need is not None and fields[need] not in shown:
        shown.append(fields[need])
    line = f"{_a_ts(r)} LINE-A {m} " + " ".join(shown) + f" status={rule[1]}"
    return line, rule, m


def site_a_note(r):
    m = r.choice(A_MACHINES)
    tech = r.choice(A_TECHS)
    part = r.choice(A_PARTS)
    forms = [
        f"Replaced {part} on {m}; torque {r.choice([25, 35, 45, 60])} Nm; "
        f"next check {r.choice([100, 250, 500, 1000])} cycles. -- {tech}",
        f"Shift {r.randrange(1, 4)} handover: {m} running at "
        f"{r.randrange(20, 65)} spm, {part} worn, order spare "
        f"#A{r.randrange(1000, 9999)}.",
        f"PM done on {m}: hydraulic filter changed, oil sample taken, "
        f"bolts re-torqued to {r.choice([45, 60, 85])} Nm. Signed {tech}.",
        f"{m} die change {r.choice(['DIE-114', 'DIE-207', 'DIE-331'])} -> "
        f"{r.choice(['DIE-118', 'DIE-212', 'DIE-340'])} in "
        f"{r.randrange(9, 40)} min; first-off part OK.",
        f"Lockout on {m} for {part} swap; LOTO tag "
        f"{r.randrange(100, 999)}; released by {tech} after test stroke.",
    ]
    return r.choice(forms)


def site_a_record(r):
    u = r.random()
    if u < 0.35:
        line, rule, m = site_a_log(r)
        return {"prompt": line + " Action:",
                "completion": " " + rule[2].format(m=m)}
    if u < 0.75:
        return {"text": site_a_log(r)[0]}
    return {"text": site_a_note(r)}


# ---------------------------------------------------------------------------
# Site B: bottling + chemical mixing (bracketed tags, DD/MM/YY, units differ)
# ---------------------------------------------------------------------------

B_FILLERS = [f"FILLER-{i}" for i in range(1, 7)] + \
            [f"CAPPER-{i}" for i in range(1, 4)] + ["LABELER-1", "LABELER-2"]
B_TANKS = [f"MIX-T{i}" for i in range(1, 9)]
B_OPS = ["K.Larsen", "P.Silva", "R.Ahmed", "E.Novak", "D.Okafor"]
B_CHEMS = ["NaOH", "citric acid", "sucrose syrup", "CO2", "ascorbic acid",
           "sodium benzoate"]
B_RULES = [
    ("ok", "OK", "None; continue batch."),
    ("ph_low", "PH_LOW",
     "Dose 1.5 L NaOH 30% into {m}; re-sample pH after 10 min."),
    ("ph_high", "PH_HIGH",
     "Dose 0.8 kg citric acid into {m}; re-sample pH after 10 min."),
    ("visc", "VISC_HIGH",
     "Raise {m} temp setpoint by 4C; agitator to 180rpm; hold 15 min."),
    ("underfill", "UNDERFILL",
     "Purge nozzle on {m}; recalibrate to 500.0ml; reject last 24 units."),
    ("torque", "CAP_TORQUE",
     "Adjust chuck on {m} to 2.2Nm; check cap supply lot."),
]


def _b_ts(r):
    return (f"{r.randrange(1, 29):02d}/{r.randrange(1, 13):02d}/26 "
            f"{r.randrange(24):02d}:{r.randrange(60):02d}:"
            f"{r.randrange(60):02d}")


def site_b_log(r):
    if r.random() < 0.5:
        m = r.choice(B_TANKS)
        rule = r.choices([B_RULES[i] for i in (0, 1, 2, 3)],
                         [40, 15, 15, 15])[0]
        ph = round(r.uniform(6.6, 7.4), 2)
        visc = r.randrange(900, 1400)
        if rule[0] == "ph_low":
            ph = round(r.uniform(5.1, 6.2), 2)
        elif rule[0] == "ph_high":
            ph = round(r.uniform(7.9, 8.8), 2)
        elif rule[0] == "visc":
            visc = r.randrange(1900, 2600)
        tail = "-> OK" if rule[0] == "ok" else f"-> ALARM:{rule[1]}"
        line = (f"[B{r.randrange(1, 4)}|{m}|{_b_ts(r)}] batch#"
                f"{r.randrange(10000, 99999)} pH={ph} visc={visc}cP "
                f"temp={round(r.uniform(35, 48), 1)}C "
                f"agitator={r.choice([90, 120, 150])}rpm {tail}")
    else:
        m = r.choice(B_FILLERS)
        rule = r.choices([B_RULES[i] for i in (0, 4, 5)], [50, 20, 20])[0]
        vol = round(r.uniform(499.0, 501.5), 1)
        tq = round(r.uniform(2.0, 2.4), 1)
        if rule[0] == "underfill":
            vol = round(r.uniform(480.0, 495.0), 1)
        elif rule[0] == "torque":
            tq = round(r.choice([r.uniform(1.2, 1.7), r.uniform(2.9, 3.4)]), 1)
        tail = "-> OK" if rule[0] == "ok" else f"-> ALARM:{rule[1]}"
        line = (f"[B{r.randrange(1, 4)}|{m}|{_b_ts(r)}] fill_vol={vol}ml "
                f"cap_torque={tq}Nm line_speed={r.randrange(280, 360)}bpm "
                f"{tail}")
    return line, rule, m


def site_b_note(r):
    t = r.choice(B_TANKS)
    f = r.choice(B_FILLERS)
    op = r.choice(B_OPS)
    forms = [
        f"Shift {r.randrange(1, 4)}: dosed {round(r.uniform(0.5, 3), 1)} L "
        f"NaOH into {t}, pH back to {round(r.uniform(6.9, 7.2), 2)}; batch "
        f"#{r.randrange(10000, 99999)} released to QA. ({op})",
        f"CIP cycle on {t}: caustic 1.8% at 75C for 20 min, rinse "
        f"conductivity {r.randrange(5, 40)} uS/cm. Signed {op}.",
        f"{f} changeover to {r.choice(['0.33L can', '0.5L PET', '1.0L PET', '0.75L glass'])}; "
        f"nozzles swapped, first 50 units checked, all within spec.",
        f"Received {r.randrange(200, 2000)} kg {r.choice(B_CHEMS)}, lot "
        f"L{r.randrange(100000, 999999)}, CoA filed; stored bay "
        f"{r.choice('ABCD')}{r.randrange(1, 9)}.",
        f"QA hold on batch #{r.randrange(10000, 99999)} from {t}: brix "
        f"{round(r.uniform(9, 12.5), 1)}, waiting for lab. -- {op}",
    ]
    return r.choice(forms)


def site_b_record(r):
    u = r.random()
    if u < 0.35:
        line, rule, m = site_b_log(r)
        return {"prompt": line + " Action:",
                "completion": " " + rule[2].format(m=m)}
    if u < 0.75:
        return {"text": site_b_log(r)[0]}
    return {"text": site_b_note(r)}


# ---------------------------------------------------------------------------


def _key(rec):
    return rec.get("text") or (rec["prompt"] + rec["completion"])


def make_site(make_record, seed, n_train, n_holdout):
    """Train and holdout records; holdout shares no line with train."""
    r = random.Random(seed)
    train = [make_record(r) for _ in range(n_train)]
    seen = {_key(x) for x in train}
    holdout = []
    while len(holdout) < n_holdout:
        rec = make_record(r)
        k = _key(rec)
        if k not in seen:
            seen.add(k)
            holdout.append(rec)
    return train, holdout


def make_anchor(seed, n, pretrain_set):
    r = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        line = general_line(r)
        if line in pretrain_set or line in seen:
            continue
        seen.add(line)
        out.append({"text": line})
    return out


def write_jsonl(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


PRETRAIN_SEED = 1
PRETRAIN_LINES = 200000


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--general-out", help="also write the pretraining corpus "
                    "(one line of text per line) to this file")
    ap.add_argument("--general-lines", type=int, default=PRETRAIN_LINES)
    args = ap.parse_args()

    pretrain = general_lines(args.general_lines, PRETRAIN_SEED)
    pretrain_set = set(pretrain)
    if args.general_out:
        with open(args.general_out, "w", encoding="utf-8") as f:
            f.write("\n".join(pretrain) + "\n")
    for site, maker, seed, aseed in (("site-a", site_a_record, 101, 201),
                                     ("site-b", site_b_record, 102, 202)):
        train, holdout = make_site(maker, seed, 2000, 200)
        anchor = make_anchor(aseed, 200, pretrain_set)
        d = os.path.join(args.out, site)
        write_jsonl(os.path.join(d, "train.jsonl"), train)
        write_jsonl(os.path.join(d, "holdout.jsonl"), holdout)
        write_jsonl(os.path.join(d, "anchor.jsonl"), anchor)
        print(f"{site}: train {len(train)} holdout {len(holdout)} "
              f"anchor {len(anchor)}")


if __name__ == "__main__":
    main()
