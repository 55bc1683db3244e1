"""Derives the ephemeris test data from the shared fixtures (adam-core's Horizons truth).

Usage: python3 derive.py FIXTURES_ORBITS_DIR
Writes horizons_ephemeris_x05.csv (every third epoch, the columns the tests compare),
horizons_objects.mpcorb and horizons_objects.sbdb.json (the heliocentric ecliptic elements of
horizons_elements_sun_ec.csv written in the MPCORB and JPL SBDB API formats, with H and G from
the ephemeris).
"""
import csv
import json
import math
import sys

src = sys.argv[1]
eph = list(csv.DictReader(open(f"{src}/horizons_ephemeris.csv")))
keep = ["targetname", "mjd_utc", "RA", "DEC", "RA_app", "DEC_app", "RA_rate", "DEC_rate",
        "V", "r", "delta", "alpha"]
by_object = {}
for row in eph:
    by_object.setdefault(row["targetname"], []).append(row)
with open("horizons_ephemeris_x05.csv", "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(keep)
    for rows in by_object.values():
        for row in rows[::3]:
            w.writerow([row[k] for k in keep])


def provisional(name):
    """`1221 Amor (1932 EA1)` -> `1932 EA1`: the key both files share."""
    return name[name.rindex("(") + 1:name.rindex(")")]


hg = {provisional(name): (float(rows[0]["H"]), float(rows[0]["G"]))
      for name, rows in by_object.items()}

DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def pack_number(n):
    if n < 100000:
        return f"{n:05d}"
    if n < 620000:
        return DIGITS[n // 10000] + f"{n % 10000:04d}"
    v, s = n - 620000, ""
    for _ in range(4):
        s = DIGITS[v % 62] + s
        v //= 62
    return "~" + s


def civil(mjd):
    z = int(mjd) + 2400001
    a = int((z - 1867216.25) / 36524.25)
    a = z + 1 + a - a // 4
    b = a + 1524
    c = int((b - 122.1) / 365.25)
    d = int(365.25 * c)
    e = int((b - d) / 30.6001)
    day = b - d - int(30.6001 * e)
    month = e - 1 if e < 14 else e - 13
    year = c - 4716 if month > 2 else c - 4715
    return year, month, day


def pack_epoch(mjd):
    y, m, d = civil(mjd)
    return "IJK"[y // 100 - 18] + f"{y % 100:02d}" + DIGITS[m] + DIGITS[d]


K = 0.01720209895
mpcorb, sbdb = [], []
for row in csv.DictReader(open(f"{src}/horizons_elements_sun_ec.csv")):
    name = row["targetname"]
    number = name.split()[0]
    rest = name.split(" ", 1)[1]
    label = rest.strip("()") if rest.startswith("(") else rest.split(" (")[0]
    readable = f"({number}) {label}"
    packed = pack_number(int(number))
    a, e = float(row["a"]), float(row["e"])
    h, g = hg[provisional(name)]
    n = math.degrees(K / a ** 1.5)
    line = (f"{packed:<7s} {h:5.2f} {g:5.2f} {pack_epoch(float(row['mjd_tdb']))} "
            f"{float(row['M']):9.5f}  {float(row['w']):9.5f}  {float(row['Omega']):9.5f}  "
            f"{float(row['incl']):9.5f}  {e:9.7f} {n:11.8f} {a:11.7f}  0 Horizons  "
            f"  100  10 2000-2020 0.50 M-v 38h Horizons   0000 {readable:<28s}20200101")
    mpcorb.append(line)
    jd = float(row["mjd_tdb"]) + 2400000.5
    elements = [("e", e), ("a", a), ("q", float(row["q"])), ("i", float(row["incl"])),
                ("om", float(row["Omega"])), ("w", float(row["w"])), ("ma", float(row["M"])),
                ("tp", float(row["tp_mjd"]) + 2400000.5)]
    sbdb.append({
        "object": {"fullname": name, "des": number},
        "orbit": {"epoch": repr(jd), "equinox": "J2000",
                  "elements": [{"name": k, "value": repr(v)} for k, v in elements]},
        "phys_par": [{"name": "H", "value": repr(h)}, {"name": "G", "value": repr(g)}],
    })
header = ["MPCORB-format elements derived from JPL Horizons (adam-core 0.6.1 fixtures)", "",
          "-" * 202]
open("horizons_objects.mpcorb", "w").write("\n".join(header + mpcorb) + "\n")
json.dump(sbdb, open("horizons_objects.sbdb.json", "w"), indent=1)
