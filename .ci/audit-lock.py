"""Checks Cargo.lock against a checkout of the RustSec advisory database, as `cargo audit
--deny warnings` does (vulnerabilities and informational notices: unmaintained, unsound),
for a machine without cargo-audit. Findings listed in the `ignore` list of audit.toml are
accepted. Exit status 1 if any other advisory applies.

Usage: audit-lock.py Cargo.lock ADVISORY_DB_DIR [audit.toml]"""
import sys, tomllib, pathlib, re

def parse_ver(v):
    v = v.split('+')[0]
    core, _, pre = v.partition('-')
    parts = [int(x) for x in core.split('.')]
    while len(parts) < 3: parts.append(0)
    return (tuple(parts), pre)

def cmp(a, b):
    (ca, pa), (cb, pb) = a, b
    if ca != cb: return -1 if ca < cb else 1
    if pa == pb: return 0
    if not pa: return 1
    if not pb: return -1
    return -1 if pa < pb else 1

def matches(ver, req):
    # req like ">= 1.2.3, < 2" or "^0.3" or "= 1.0"
    for clause in req.split(','):
        clause = clause.strip()
        m = re.match(r'(>=|<=|>|<|=|\^|~)?\s*(.*)', clause)
        op, rv = m.group(1) or '^', m.group(2)
        r = parse_ver(rv)
        c = cmp(ver, r)
        if op == '>=' and not c >= 0: return False
        if op == '>' and not c > 0: return False
        if op == '<=' and not c <= 0: return False
        if op == '<' and not c < 0: return False
        if op == '=' and c != 0: return False
        if op in ('^', '~'):
            if c < 0: return False
            nums = [int(x) for x in rv.split('-')[0].split('.')]
            if op == '~':
                upper = (nums[0], nums[1] + 1, 0) if len(nums) > 1 else (nums[0] + 1, 0, 0)
            elif nums[0] > 0: upper = (nums[0] + 1, 0, 0)
            elif len(nums) > 1 and nums[1] > 0: upper = (0, nums[1] + 1, 0)
            else: upper = (0, 0, (nums[2] if len(nums) > 2 else 0) + 1)
            if cmp(ver, (upper, '')) >= 0: return False
    return True

lock = tomllib.load(open(sys.argv[1], 'rb'))
db = pathlib.Path(sys.argv[2])
if not (db / 'crates').is_dir():
    sys.exit(f"{db} is not a checkout of the advisory database (no crates/ folder)")
ignored = set()
if len(sys.argv) > 3:
    ignored = set(tomllib.load(open(sys.argv[3], 'rb')).get('advisories', {}).get('ignore', []))
found = 0
for pkg in lock['package']:
    if 'source' not in pkg or 'crates.io' not in pkg['source']: continue
    d = db / 'crates' / pkg['name']
    if not d.is_dir(): continue
    ver = parse_ver(pkg['version'])
    for f in sorted(d.glob('*.md')):
        text = f.read_text()
        front = text.split('```toml', 1)[1].split('```', 1)[0]
        adv = tomllib.loads(front)
        a = adv['advisory']
        if a.get('withdrawn'): continue
        vs = adv.get('versions', {})
        patched = vs.get('patched', []); unaffected = vs.get('unaffected', [])
        if any(matches(ver, r) for r in patched + unaffected): continue
        kind = a.get('informational') or 'vulnerability'
        accepted = a['id'] in ignored
        print(f"{a['id']}  {pkg['name']} {pkg['version']}  [{kind}]  {a.get('title', '')}"
              + ("  (accepted in audit.toml)" if accepted else ""))
        found += not accepted
print(f"{len(lock['package'])} packages checked; {found} advisories apply (not accepted)")
sys.exit(1 if found else 0)
