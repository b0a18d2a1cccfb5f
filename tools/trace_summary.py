"""Summarise a `jax.profiler` trace into a small JSON: where the device time of a step goes.

A full trace of two ITIT-B steps is tens of MB (too big to bring back from a lent GPU box); this
keeps what answers "what limits MFU": per device line (XLA Modules / XLA Ops / each stream), the
busy time, and the top operations by total time, grouped into categories (matmul, attention,
random bits, reductions/fusions, copies, collectives, other).

  python -m tools.trace_summary TRACE_DIR [--out summary.json] [--top 30]

TRACE_DIR is what `jax.profiler.trace(TRACE_DIR)` wrote (the newest `*.trace.json.gz` under it is
read). Device lines are those of processes whose name contains "/device:" (GPU/TPU); on a CPU
trace, where there are none, host threads are summarised instead.
"""
import collections
import glob
import gzip
import json
import os
import re
import sys

from itit import errors

# Order matters: the first matching pattern names the category.
CATEGORIES = (
    ('attention', r'flash|fmha|cudnn.*attn|attention|sdpa|dot_product_attention'),
    ('matmul', r'gemm|nvjet|cublas|cutlass|matmul|\bdot\b|dot\.|dot_|convolution|xmma|sm\d+_.*(hmma|wgmma)'),
    ('random', r'threefry|rng|random|philox'),
    ('collective', r'all-reduce|all_reduce|all-gather|reduce-scatter|nccl|collective'),
    ('copy', r'memcpy|memset|copy|transpose|dynamic-update-slice|dynamic_update_slice'),
    ('reduce', r'reduce|softmax|norm'),
    ('fusion', r'fusion|loop_|input_'),
)


def categorise(name):
  lowered = name.lower()
  for category, pattern in CATEGORIES:
    if re.search(pattern, lowered):
      return category
  return 'other'


def find_trace(path):
  if os.path.isfile(path):
    return path
  files = glob.glob(os.path.join(path, '**', '*.trace.json.gz'), recursive=True)
  if not files:
    raise errors.MissingFileError(f'no *.trace.json.gz under {path}: pass the directory given to '
                                  'jax.profiler.trace, or a .trace.json.gz file')
  return max(files, key=os.path.getmtime)


def busy_time(intervals):
  """Total length of the union of [start, end) intervals, in the trace's time unit."""
  total, current_start, current_end = 0.0, None, None
  for start, end in sorted(intervals):
    if current_end is None or start > current_end:
      if current_end is not None:
        total += current_end - current_start
      current_start, current_end = start, end
    else:
      current_end = max(current_end, end)
  if current_end is not None:
    total += current_end - current_start
  return total


def summarise(events, top=30):
  """events: Chrome-trace events (dicts with ph, pid, tid, name, ts, dur; 'M' metadata names
  processes and threads). Returns {'lines': [...]}: one entry per device line (or host thread
  when no device process exists), each with span_us, busy_us, by_category and top ops."""
  process_names, thread_names = {}, {}
  for event in events:
    if event.get('ph') != 'M':
      continue
    if event.get('name') == 'process_name':
      process_names[event['pid']] = event['args']['name']
    elif event.get('name') == 'thread_name':
      thread_names[(event['pid'], event['tid'])] = event['args']['name']
  device_pids = {pid for pid, name in process_names.items() if '/device:' in name}
  lines = collections.defaultdict(list)
  for event in events:
    if event.get('ph') != 'X' or 'dur' not in event:
      continue
    if device_pids and event['pid'] not in device_pids:
      continue
    key = (process_names.get(event['pid'], str(event['pid'])),
           thread_names.get((event['pid'], event.get('tid')), str(event.get('tid'))))
    lines[key].append(event)
  summary = []
  for (process, thread), line_events in sorted(lines.items()):
    starts = [e['ts'] for e in line_events]
    ends = [e['ts'] + e['dur'] for e in line_events]
    busy = busy_time(zip(starts, ends))
    by_name = collections.defaultdict(lambda: [0.0, 0])
    for e in line_events:
      by_name[e['name']][0] += e['dur']
      by_name[e['name']][1] += 1
    by_category = collections.defaultdict(float)
    for name, (total, _) in by_name.items():
      by_category[categorise(name)] += total
    op_total = sum(total for total, _ in by_name.values()) or 1.0
    ranked = sorted(by_name.items(), key=lambda item: -item[1][0])[:top]
    summary.append({
        'process': process, 'thread': thread, 'events': len(line_events),
        'span_us': max(ends) - min(starts), 'busy_us': busy,
        'by_category': {c: {'us': t, 'fraction': t / op_total}
                        for c, t in sorted(by_category.items(), key=lambda item: -item[1])},
        'top': [{'name': name[:200], 'category': categorise(name), 'us': total, 'count': count,
                 'fraction': total / op_total} for name, (total, count) in ranked],
    })
  return {'device_lines': bool(device_pids), 'lines': summary}


def print_summary(summary, top=12):
  for line in summary['lines']:
    span = line['span_us'] or 1.0
    print(f"== {line['process']} | {line['thread']}: {line['events']} events, busy "
          f"{line['busy_us'] / 1e3:.1f} ms of {span / 1e3:.1f} ms "
          f"({100 * line['busy_us'] / span:.0f}%)")
    print('   ' + ', '.join(f"{c} {100 * v['fraction']:.0f}%"
                            for c, v in line['by_category'].items()))
    for op in line['top'][:top]:
      print(f"   {op['us'] / 1e3:9.2f} ms {op['count']:6d}x {op['category']:10s} {op['name'][:90]}")


def main(argv=None):
  parser = errors.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('trace', help='directory given to jax.profiler.trace, or a .trace.json.gz')
  parser.add_argument('--out', default='', help='write the summary JSON here')
  parser.add_argument('--top', type=int, default=30, help='operations kept per line')
  args = parser.parse_args(argv)
  path = find_trace(args.trace)
  with gzip.open(path, 'rt') as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  summary = summarise(events, top=args.top)
  summary['trace_file'] = path
  print_summary(summary)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(summary, f, indent=1)
    print(f'summary written to {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(errors.run_command(main))
