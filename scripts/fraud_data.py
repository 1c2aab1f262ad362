#!/usr/bin/env python3
"""Seeded synthetic card-transaction generator for Cordon's fraud-scoring example.

    python3 scripts/fraud_data.py --seed 7 --cards 2000 --days 14 --out tx.csv [--drift 1.0]

Cards live as streams over time: each card has a profile (how often and where
it spends, on what, how much, online or in person, whether its holder
travels), and its transactions are generated over a warm-up period plus the
emitted window. Features that depend on history (time since the previous
transaction, counts and sums over the last hour/day, amount against the card's
running mean, new merchant, new merchant category, speed from the previous
location) are computed from everything the card did before, warm-up included,
fraud included, as an issuer would see it at authorization time. Only the
window's transactions are emitted, in time order.

Fraud is injected as incidents on victim cards, in four patterns a gradient-
boosted tree model can learn, though not perfectly:

1. card testing: a burst of small online amounts at an unfamiliar merchant
   from a risky device, sometimes followed by a large online cash-out;
2. counterfeit card present abroad: large purchases or ATM cash, often at
   night, often by magnetic stripe, far from home;
3. account takeover after a quiet period: the card is dormant for weeks, then
   large online purchases from a new device;
4. stealth: purchases that look like the holder's own, a little larger, at new
   merchants (nearly undetectable, on purpose).

Legitimate behaviour overlaps every pattern: travellers abroad, night owls,
bursts of small in-app purchases, occasional big purchases, new devices.
Labels carry noise: 5% of fraudulent transactions are never reported (label 0)
and 0.01% of legitimate ones are disputed as fraud (label 1). Incidents are
added until the labelled fraud rate reaches --fraud-rate (default 0.2%).

--drift D shifts distributions with time (absolute day / 365 * D): amounts
inflate, more spending moves online, and fraudsters move from card testing
and counterfeit cards to account takeover and stealth, with cleaner devices.
A model trained at day 0 sees its recall fall on a drifted stream.

Deterministic: the same arguments give the same rows (one numpy Generator,
draws in a fixed order). GENERATOR_VERSION changes whenever the output for a
given seed changes.

Feature vector (float32, in this order; NaN = missing):
"""

import argparse
import sys
from dataclasses import dataclass

import numpy as np

GENERATOR_VERSION = "1"

# (name, description): the model's input columns, in order.
FEATURES = [
    ("amount", "transaction amount in currency units (cents resolution)"),
    ("mcc", "merchant category code (ISO 18245), as a number"),
    ("hour", "local hour of day, 0-23"),
    ("weekday", "day of week, 0 = Monday .. 6 = Sunday"),
    ("card_present", "1 = card present at a terminal, 0 = online / card not present"),
    ("entry_mode", "0 = online, 1 = chip, 2 = contactless, 3 = magnetic stripe, 4 = key entry"),
    ("foreign", "1 = merchant (or, online, the IP address) in another country"),
    ("distance_from_home_km", "distance of the terminal (card present) or IP geolocation (online) from the "
                              "holder's home, km"),
    ("speed_from_prev_kmh", "distance from the previous transaction's location / time since it, km/h "
                            "(time floored at 1 min); NaN for a card's first transaction"),
    ("secs_since_prev", "seconds since the card's previous transaction; NaN for its first"),
    ("txn_count_1h", "the card's transactions in the previous hour"),
    ("txn_count_24h", "the card's transactions in the previous 24 hours"),
    ("amount_sum_24h", "sum of the card's amounts in the previous 24 hours"),
    ("card_mean_amount", "mean of the card's previous amounts; NaN for its first transaction"),
    ("amount_to_mean", "amount / card_mean_amount; NaN for a card's first transaction"),
    ("new_merchant", "1 = first transaction of this card at this merchant"),
    ("new_mcc", "1 = first transaction of this card in this merchant category"),
    ("device_risk", "online only: the issuer's device/IP risk score, 0-1; NaN when the card is present"),
    ("new_device", "online only: 1 = device never seen with this card before"),
    ("card_age_days", "days since the card was issued"),
]
N_FEATURES = len(FEATURES)
__doc__ += "\n".join(f"  {i:2d} {name}: {desc}" for i, (name, desc) in enumerate(FEATURES)) + "\n"

# Fraud patterns (0 = legitimate).
PATTERNS = ["legit", "card_testing", "counterfeit_abroad", "account_takeover", "stealth"]

# Merchant categories: (MCC, name, log-normal mu of amount, sigma, P(online) baseline, share of spending).
CATEGORIES = [
    (5411, "grocery", np.log(45.0), 0.6, 0.05, 0.22),
    (5812, "restaurants", np.log(30.0), 0.6, 0.10, 0.15),
    (5541, "fuel", np.log(50.0), 0.35, 0.00, 0.10),
    (5651, "clothing", np.log(60.0), 0.8, 0.35, 0.10),
    (5732, "electronics", np.log(180.0), 0.9, 0.45, 0.04),
    (4511, "airlines", np.log(350.0), 0.8, 0.70, 0.02),
    (5818, "digital goods", np.log(10.0), 0.9, 1.00, 0.08),
    (5912, "pharmacy", np.log(25.0), 0.6, 0.10, 0.06),
    (4900, "utilities", np.log(80.0), 0.5, 0.90, 0.05),
    (5944, "jewelry", np.log(400.0), 1.0, 0.30, 0.01),
    (7995, "gambling", np.log(60.0), 1.0, 0.90, 0.01),
    (6011, "ATM cash", np.log(100.0), 0.6, 0.00, 0.04),
    (4121, "taxis", np.log(18.0), 0.5, 0.50, 0.07),
    (5200, "home improvement", np.log(90.0), 0.9, 0.20, 0.05),
]
K = len(CATEGORIES)
MCC = np.array([c[0] for c in CATEGORIES], dtype=np.float64)
MU = np.array([c[2] for c in CATEGORIES])
SIGMA = np.array([c[3] for c in CATEGORIES])
ONLINE = np.array([c[4] for c in CATEGORIES])
SHARE = np.array([c[5] for c in CATEGORIES])
SHARE = SHARE / SHARE.sum()
CAT = {c[1]: i for i, c in enumerate(CATEGORIES)}

# Legitimate spending by hour of day (busy afternoons, quiet nights).
HOUR_W = np.array([0.6, 0.35, 0.2, 0.15, 0.15, 0.3, 0.9, 2.0, 3.5, 4.5, 5.2, 6.0,
                   7.0, 6.5, 6.0, 6.0, 6.3, 7.0, 7.2, 6.5, 5.2, 3.8, 2.4, 1.3])
HOUR_P = HOUR_W / HOUR_W.sum()
NIGHT_HOURS = np.array([22, 23, 0, 1, 2, 3, 4, 5])

DAY = 86400
MERCHANTS_PER_CATEGORY = 100_000  # merchant ids: category * 10^6 + 10^5 * foreign + k
FAVOURITES = 3
# History keys: card * KEY_STRIDE + seconds; the stride exceeds any time span generated.
KEY_STRIDE = 1e9


@dataclass
class Transactions:
    """Rows in stream order (time, then card)."""
    X: np.ndarray        # float32 [n, N_FEATURES]
    label: np.ndarray    # int64 [n]: observed label (with noise), 1 = reported fraud
    pattern: np.ndarray  # int64 [n]: index into PATTERNS (ground truth, 0 = legitimate)
    card: np.ndarray     # int64 [n]
    t: np.ndarray        # int64 [n]: seconds since day 0, 00:00, a Monday


def _popular(rng, size):
    """Merchant index within a category, skewed so that a few merchants are popular."""
    return (MERCHANTS_PER_CATEGORY * rng.random(size) ** 3).astype(np.int64)


def _offsets(rng, r):
    """Points at distance r (km) from the origin, random direction."""
    a = rng.uniform(0.0, 2 * np.pi, np.shape(r))
    return r * np.cos(a), r * np.sin(a)


def generate(seed, n_cards, days, start_day=0, warmup_days=30, fraud_rate=0.002, drift=0.0):
    """Transactions of n_cards cards over days [start_day, start_day + days), with history from
    warmup_days before. drift scales time-dependent shifts (0 = stationary)."""
    if n_cards < 1 or days < 1 or warmup_days < 0 or not 0.0 <= fraud_rate < 0.5 or drift < 0:
        raise ValueError("need n_cards >= 1, days >= 1, warmup_days >= 0, 0 <= fraud_rate < 0.5, drift >= 0")
    rng = np.random.default_rng(seed)
    t_lo, t_hi = (start_day - warmup_days) * DAY, (start_day + days) * DAY

    def drift_at(t):
        return drift * np.maximum(np.asarray(t, dtype=np.float64), 0.0) / (365.0 * DAY)

    # --- card profiles ---------------------------------------------------
    rate = np.clip(rng.gamma(1.6, 0.75, n_cards), 0.05, 8.0)        # transactions per day
    spend = rng.lognormal(0.0, 0.35, n_cards)                        # multiplies every amount
    online_aff = rng.beta(2.0, 2.0, n_cards)
    contactless_aff = rng.beta(3.0, 2.0, n_cards)
    pref = rng.standard_gamma(np.broadcast_to(SHARE * 30.0, (n_cards, K)))
    pref /= pref.sum(axis=1, keepdims=True)
    cum_pref = np.cumsum(pref, axis=1)
    favourites = _popular(rng, (n_cards, K, FAVOURITES))
    issued = t_lo - rng.integers(30, 3000, n_cards) * DAY
    traveller = rng.random(n_cards) < 0.06
    trip_start = rng.integers(t_lo, t_hi, n_cards)
    trip_end = trip_start + rng.integers(3, 15, n_cards) * DAY
    trip_abroad = rng.random(n_cards) < 0.6
    trip_x, trip_y = _offsets(rng, np.where(trip_abroad, rng.uniform(800, 9000, n_cards),
                                            rng.uniform(200, 900, n_cards)))

    # --- legitimate transactions ------------------------------------------
    counts = rng.poisson(rate * (t_hi - t_lo) / DAY)
    card = np.repeat(np.arange(n_cards), counts)
    n = card.size
    t = (rng.integers(t_lo // DAY, t_hi // DAY, n) * DAY + rng.choice(24, n, p=HOUR_P) * 3600
         + rng.integers(0, 3600, n))
    d = drift_at(t)
    cat = np.minimum((rng.random(n)[:, None] > cum_pref[card]).sum(axis=1), K - 1)
    amount = np.exp(MU[cat] + SIGMA[cat] * rng.standard_normal(n)) * spend[card] * (1.0 + 0.1 * d)
    amount = np.where(cat == CAT["ATM cash"], np.maximum(20.0, np.round(amount / 20.0) * 20.0),
                      np.maximum(0.5, np.round(amount, 2)))
    p_online = np.clip(ONLINE[cat] + (online_aff[card] - 0.5) * 0.5 + 0.15 * d, 0.0, 1.0)
    p_online = np.where(ONLINE[cat] == 0.0, 0.0, np.where(ONLINE[cat] == 1.0, 1.0, p_online))
    online = rng.random(n) < p_online
    u = rng.random(n)
    entry = np.where(online, 0, np.where(u < 0.02, 3, np.where(u < 0.025, 4, np.where(
        (rng.random(n) < contactless_aff[card]) & (amount < 100), 2, 1))))
    in_trip = traveller[card] & (t >= trip_start[card]) & (t < trip_end[card])
    foreign = (in_trip & trip_abroad[card] & ~online) | (online & (rng.random(n) < 0.05))
    # where: near home, sometimes out of town; online = IP geolocation (mobile, VPN)
    r_local = np.where(rng.random(n) < 0.9, rng.exponential(8.0, n), rng.exponential(120.0, n))
    r_ip = np.where(rng.random(n) < 0.85, rng.exponential(15.0, n), rng.uniform(50.0, 2000.0, n))
    x, y = _offsets(rng, np.where(online, r_ip, r_local))
    x = np.where(in_trip, trip_x[card] + x * 0.3, x)
    y = np.where(in_trip, trip_y[card] + y * 0.3, y)
    fav = favourites[card, cat, rng.integers(0, FAVOURITES, n)]
    merchant = np.where((rng.random(n) < 0.7) & ~in_trip, fav, _popular(rng, n))
    new_device = online & (rng.random(n) < np.where(in_trip, 0.06, 0.02))
    device_risk = np.where(new_device, rng.beta(2.0, 6.0, n), rng.beta(1.2, 25.0, n))
    cols = dict(card=card, t=t, amount=amount, cat=cat, online=online, entry=entry, foreign=foreign,
                x=x, y=y, merchant=merchant, new_device=new_device, device_risk=device_risk)

    # Legitimate bursts: in-app purchases, split payments, rides: 1-4 more at the same merchant
    # within minutes, like card testing but from the holder's own device.
    base = np.flatnonzero(((cat == CAT["digital goods"]) | (cat == CAT["taxis"])) & (rng.random(n) < 0.08))
    reps = rng.integers(1, 5, base.size)
    src = np.repeat(base, reps)
    step = np.concatenate([np.arange(1, r + 1) for r in reps]) if reps.size else np.zeros(0, np.int64)
    burst = {k: v[src] for k, v in cols.items()}
    burst["t"] = burst["t"] + (step * rng.exponential(90.0, src.size)).astype(np.int64) + step
    burst["amount"] = np.maximum(0.5, np.round(burst["amount"] * rng.uniform(0.5, 1.5, src.size), 2))
    cols = {k: np.concatenate([cols[k], burst[k]]) for k in cols}
    cols["pattern"] = np.zeros(cols["t"].size, dtype=np.int64)

    # --- fraud incidents ----------------------------------------------------
    in_window = cols["t"] >= start_day * DAY
    # Fraudulent rows needed so that the *labelled* rate comes out at fraud_rate: 5% of them will
    # lose their label, and disputes add about 0.01% of the legitimate rows.
    target = (fraud_rate / (1.0 - fraud_rate) - 0.0001) / 0.95 * in_window.sum()
    rows = []          # one dict of equal-length arrays per incident
    removed = np.zeros(cols["t"].size, dtype=bool)
    n_fraud = 0
    while n_fraud < target:
        v = int(rng.integers(0, n_cards))
        t0 = int(rng.integers(start_day, start_day + days)) * DAY + int(rng.integers(0, 3600))
        dd = float(drift_at(t0))
        w = np.array([0.35, 0.30, 0.25, 0.10]) + dd * np.array([-0.10, -0.10, 0.12, 0.08])
        w = np.maximum(w, 0.02)
        pat = 1 + int(rng.choice(4, p=w / w.sum()))
        if pat == 1:    # card testing, then sometimes a cash-out
            k = int(rng.integers(3, 13))
            hours = int(rng.integers(0, 24))
            ts = t0 + hours * 3600 + np.cumsum(rng.exponential(45.0, k).astype(np.int64) + 1)
            c = np.full(k, CAT["digital goods"] if rng.random() < 0.7 else CAT["clothing"])
            amt = np.round(rng.uniform(0.5, 5.0, k) * (1.0 + 2.0 * dd), 2)
            amt = np.where(rng.random(k) < 0.3, np.maximum(1.0, np.round(amt)), amt)
            m = np.full(k, int(rng.integers(MERCHANTS_PER_CATEGORY // 2, MERCHANTS_PER_CATEGORY)))
            if rng.random() < 0.5:
                j = int(rng.integers(1, 3))
                ts = np.concatenate([ts, ts[-1] + np.cumsum(rng.integers(1800, 6 * 3600, j))])
                c = np.concatenate([c, rng.choice([CAT["electronics"], CAT["jewelry"]], j)])
                amt = np.concatenate([amt, np.round(rng.lognormal(np.log(700.0), 0.5, j), 2)])
                m = np.concatenate([m, _popular(rng, j)])
            k = ts.size
            is_online = np.ones(k, dtype=bool)
            ent = np.zeros(k, dtype=np.int64)
            frn = np.full(k, rng.random() < 0.5)
            # a far-away IP, or a residential proxy near the victim's home
            r = rng.uniform(300.0, 9000.0) if rng.random() < 0.55 else rng.exponential(30.0)
            px, py = _offsets(rng, np.full(k, r))
            nd = np.full(k, rng.random() < 0.9)
            risk = np.full(k, rng.beta(3.0 / (1.0 + dd), 4.0 * (1.0 + dd)))
        elif pat == 2:  # counterfeit card used in person, far away, often at night
            k = int(rng.integers(1, 5))
            hour = int(rng.choice(NIGHT_HOURS)) if rng.random() < 0.75 else int(rng.integers(0, 24))
            ts = t0 - (t0 % DAY) + hour * 3600 + np.cumsum(rng.integers(600, 7200, k))
            c = rng.choice([CAT["electronics"], CAT["jewelry"], CAT["ATM cash"], CAT["clothing"]], k,
                           p=[0.3, 0.2, 0.3, 0.2])
            amt = rng.lognormal(np.log(500.0), 0.7, k)
            amt = np.where(c == CAT["ATM cash"], np.maximum(20.0, np.round(amt / 20.0) * 20.0), np.round(amt, 2))
            m = _popular(rng, k)
            is_online = np.zeros(k, dtype=bool)
            ent = np.where(rng.random(k) < 0.6, 3, 1)
            abroad = rng.random() < 0.85
            frn = np.full(k, abroad)
            cx, cy = _offsets(rng, rng.uniform(800.0, 9000.0) if abroad else rng.uniform(300.0, 900.0))
            ox, oy = _offsets(rng, rng.exponential(5.0, k))
            px, py = cx + ox, cy + oy
            nd = np.zeros(k, dtype=bool)
            risk = np.full(k, np.nan)
        elif pat == 3:  # account takeover after a quiet period
            quiet = int(rng.uniform(7.0, 40.0) * DAY)
            removed |= (cols["card"] == v) & (cols["t"] >= t0 - quiet) & (cols["t"] < t0) & (cols["pattern"] == 0)
            k = int(rng.integers(1, 6))
            hour = int(rng.choice(24, p=HOUR_P)) if rng.random() < 0.5 else int(rng.integers(0, 24))
            ts = t0 + hour * 3600 + np.cumsum(rng.integers(300, 3 * 3600, k))
            c = rng.choice([CAT["electronics"], CAT["airlines"], CAT["digital goods"], CAT["gambling"],
                            CAT["clothing"]], k, p=[0.35, 0.2, 0.15, 0.1, 0.2])
            amt = np.round(rng.lognormal(np.log(350.0), 0.8, k), 2)
            m = _popular(rng, k)
            is_online = np.ones(k, dtype=bool)
            ent = np.zeros(k, dtype=np.int64)
            frn = rng.random(k) < 0.3
            r = rng.exponential(200.0) if rng.random() < 0.5 else rng.uniform(500.0, 9000.0)
            px, py = _offsets(rng, np.full(k, r))
            nd = np.full(k, rng.random() < 0.85)
            risk = np.full(k, rng.beta(4.0 / (1.0 + dd), 3.0 * (1.0 + dd)))
        else:           # stealth: looks like the holder, a little larger, new merchants
            k = int(rng.integers(1, 3))
            ts = t0 + int(rng.choice(24, p=HOUR_P)) * 3600 + np.cumsum(rng.integers(600, 4 * 3600, k))
            c = np.minimum((rng.random(k)[:, None] > cum_pref[v]).sum(axis=1), K - 1)
            amt = np.exp(MU[c] + SIGMA[c] * rng.standard_normal(k)) * spend[v] * rng.uniform(1.0, 3.0, k)
            amt = np.where(c == CAT["ATM cash"], np.maximum(20.0, np.round(amt / 20.0) * 20.0),
                           np.maximum(0.5, np.round(amt, 2)))
            is_online = (rng.random(k) < 0.5) & (ONLINE[c] > 0.0) | (ONLINE[c] == 1.0)
            ent = np.where(is_online, 0, 1)
            frn = np.zeros(k, dtype=bool)
            px, py = _offsets(rng, rng.exponential(20.0, k))
            m = _popular(rng, k)
            nd = is_online & (rng.random(k) < 0.4)
            risk = np.where(is_online, rng.beta(2.0, 8.0, k), np.nan)
        rows.append(dict(card=np.full(k, v), t=ts.astype(np.int64), amount=amt.astype(np.float64),
                         cat=c.astype(np.int64), online=is_online, entry=ent.astype(np.int64),
                         foreign=frn.astype(bool), x=px.astype(np.float64), y=py.astype(np.float64),
                         merchant=m.astype(np.int64), new_device=nd.astype(bool),
                         device_risk=risk.astype(np.float64), pattern=np.full(k, pat)))
        n_fraud += k
    keep = ~removed
    cols = {k: np.concatenate([cols[k][keep]] + [r[k] for r in rows]) for k in cols}

    # --- history features, per card in time order ---------------------------
    order = np.lexsort((cols["t"], cols["card"]))
    c = {k: v[order] for k, v in cols.items()}
    card, t = c["card"], c["t"]
    n = t.size
    idx = np.arange(n)
    first_of_card = np.ones(n, dtype=bool)
    first_of_card[1:] = card[1:] != card[:-1]
    card_start = np.maximum.accumulate(np.where(first_of_card, idx, 0))
    has_prev = ~first_of_card
    prev = np.maximum(idx - 1, 0)
    dt = (t - t[prev]).astype(np.float64)
    secs_since_prev = np.where(has_prev, dt, np.nan)
    hop = np.hypot(c["x"] - c["x"][prev], c["y"] - c["y"][prev])
    speed = np.where(has_prev, np.minimum(hop / np.maximum(dt, 60.0) * 3600.0, 99_999.0), np.nan)
    key = card * KEY_STRIDE + t
    lo_1h = np.maximum(np.searchsorted(key, key - 3600, side="left"), card_start)
    lo_24h = np.maximum(np.searchsorted(key, key - DAY, side="left"), card_start)
    cs = np.concatenate([[0.0], np.cumsum(c["amount"])])
    sum_24h = cs[idx] - cs[lo_24h]
    n_before = idx - card_start
    mean_before = np.where(n_before > 0, (cs[idx] - cs[card_start]) / np.maximum(n_before, 1), np.nan)

    def first_seen(code):
        _, first = np.unique(card * (K * 10 * MERCHANTS_PER_CATEGORY) + code, return_index=True)
        flag = np.zeros(n, dtype=bool)
        flag[first] = True
        return flag

    merchant_id = c["cat"] * 10 * MERCHANTS_PER_CATEGORY + c["foreign"] * MERCHANTS_PER_CATEGORY + c["merchant"]
    day = t // DAY
    X = np.column_stack([
        c["amount"],
        MCC[c["cat"]],
        (t % DAY) // 3600,
        day % 7,
        ~c["online"],
        c["entry"],
        c["foreign"],
        np.round(np.hypot(c["x"], c["y"]), 1),
        np.round(speed, 1),
        secs_since_prev,
        idx - lo_1h,
        idx - lo_24h,
        np.round(sum_24h, 2),
        np.round(mean_before, 2),
        np.round(c["amount"] / mean_before, 3),
        first_seen(merchant_id),
        first_seen(c["cat"]),
        np.where(c["online"], np.round(c["device_risk"], 3), np.nan),
        c["online"] & c["new_device"],
        (t - issued[card]) // DAY,
    ]).astype(np.float64).astype(np.float32)
    assert X.shape[1] == N_FEATURES

    # --- emit the window, in stream order, with noisy labels ----------------
    out = np.flatnonzero(t >= start_day * DAY)
    out = out[np.lexsort((card[out], t[out]))]
    pattern = c["pattern"][out]
    flip = rng.random(out.size)
    label = np.where(pattern > 0, flip >= 0.05, flip < 0.0001).astype(np.int64)
    return Transactions(X=X[out], label=label, pattern=pattern, card=card[out].astype(np.int64),
                        t=t[out].astype(np.int64))


def f32_text(v):
    """Shortest decimal that reads back as the same float32 (empty for NaN). It must also survive
    being read as float64 and then rounded to float32, which is what a JSON parser does."""
    v = np.float32(v)
    if np.isnan(v):
        return ""
    s = np.format_float_positional(v, unique=True, trim="-")
    if np.float32(float(s)) != v:  # double rounding: fall back to the exact widened value
        s = repr(float(v))
    return s


def write_csv(path, tx, extra=None):
    """CSV: a header of feature names, label and pattern (and extra columns), then one row per
    transaction; floats as f32_text, NaN as an empty field."""
    extra = extra or {}
    header = [name for name, _ in FEATURES] + ["label", "pattern"] + list(extra)
    with open(path, "w", encoding="ascii", newline="\n") as f:
        f.write(",".join(header) + "\n")
        for i in range(tx.X.shape[0]):
            fields = [f32_text(v) for v in tx.X[i]] + [str(int(tx.label[i])), str(int(tx.pattern[i]))]
            fields += [f32_text(col[i]) for col in extra.values()]
            f.write(",".join(fields) + "\n")


def summary(tx):
    n = tx.label.size
    lines = [f"{n} transactions, {tx.label.sum()} labelled fraud ({tx.label.mean():.4%}), "
             f"{np.unique(tx.card).size} cards"]
    for p in range(1, len(PATTERNS)):
        sel = tx.pattern == p
        lines.append(f"  {PATTERNS[p]}: {sel.sum()} transactions, {tx.label[sel].sum()} labelled fraud")
    lines.append(f"  legit labelled fraud (disputes): {tx.label[tx.pattern == 0].sum()}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cards", type=int, default=2000)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--start-day", type=int, default=0, help="first emitted day (drift grows with it)")
    ap.add_argument("--warmup-days", type=int, default=30, help="history before the window, not emitted")
    ap.add_argument("--fraud-rate", type=float, default=0.002)
    ap.add_argument("--drift", type=float, default=0.0, help="strength of the drift per year (0 = none)")
    ap.add_argument("--out", required=True, help="CSV file to write")
    a = ap.parse_args()
    tx = generate(a.seed, a.cards, a.days, a.start_day, a.warmup_days, a.fraud_rate, a.drift)
    write_csv(a.out, tx)
    print(summary(tx), file=sys.stderr)


if __name__ == "__main__":
    main()
