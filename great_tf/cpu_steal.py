"""How much CPU time a shared virtual machine took away while a stage ran (docs/design.md#evidence).

On a virtual machine the wall clock of a run measures its neighbours too: when the host is busy,
a virtual CPU that is ready to run waits, and Linux counts that wait as *steal* time in the
`cpu` line of /proc/stat. The evidence campaign records, per stage, the CPU time that passed and
how much of it was stolen, so a stage that took twice as long as its twin can say why. The
figures are summed over a stage's resumed attempts, like its minutes.

Elsewhere than on Linux there is no /proc/stat: nothing is recorded and the share is unknown.

The wall clock also runs on while a stage is paused (`kill -STOP`, to time something else). What
the stage's own processes used of the processors (user plus system time, both cores counted) does
not: it is recorded beside the minutes as the stage's cost.
"""

PROC_STAT = "/proc/stat"
# The fields of the `cpu` line (man 5 proc): guest time is already part of user time, so the
# total is the sum of the first eight.
FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def parse_cpu_line(text):
    """{"total": jiffies, "steal": jiffies} from the text of /proc/stat (its aggregate `cpu` line)."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            counts = [int(v) for v in parts[1:1 + len(FIELDS)]]
            counts += [0] * (len(FIELDS) - len(counts))  # old kernels have fewer columns
            return {"total": sum(counts), "steal": counts[FIELDS.index("steal")]}
    raise ValueError("no aggregate 'cpu' line")


def read_cpu_times(path=PROC_STAT):
    """The machine's CPU time counters now, or None where there are none to read."""
    try:
        with open(path) as f:
            return parse_cpu_line(f.read())
    except (OSError, ValueError):
        return None


def elapsed(before, after):
    """{"cpu_jiffies", "steal_jiffies"} between two readings (None if either is missing)."""
    if before is None or after is None:
        return None
    return {"cpu_jiffies": after["total"] - before["total"], "steal_jiffies": after["steal"] - before["steal"]}


def add(recorded, more):
    """Counters summed over a stage's attempts (`recorded` from campaign.json, maybe without them)."""
    if more is None:
        return {}
    return {key: recorded.get(key, 0) + value for key, value in more.items()}


def stolen_percent(entry):
    """The share of the CPU time stolen from the machine while the stage ran, in percent (None if
    it was not recorded)."""
    total = entry.get("cpu_jiffies")
    if not total:
        return None
    return 100.0 * entry.get("steal_jiffies", 0) / total


def children_cpu_seconds():
    """User plus system seconds of this process's finished and waited-for children so far, or
    None where the system does not count them (Windows has no `resource` module)."""
    try:
        import resource
    except ImportError:
        return None
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def children_cpu_used(before, recorded):
    """{"cpu_seconds": ...}: the children's processor time since `before`, added to what earlier
    attempts `recorded`; empty where it is not counted."""
    now = children_cpu_seconds()
    if before is None or now is None:
        return {}
    return {"cpu_seconds": round(recorded.get("cpu_seconds", 0.0) + now - before, 1)}


def cpu_minutes(entry):
    """The processor minutes a stage's processes used (None if it was not recorded)."""
    seconds = entry.get("cpu_seconds")
    return None if seconds is None else seconds / 60.0
