-- wrk script of bench/ledger_bench.py (`--client wrk`): POST pre-signed request bodies, each at
-- most once, and record every request's (start, end, status).
--
--   wrk -t N -c N -d SECONDS -s bench/wrk_post.lua URL -- DIR N
--
-- DIR holds `bodies-<i>.txt` for i in 0..N-1, thread i's disjoint share of the bodies, one JSON
-- body a line. The bench runs one connection per thread: with one request in flight per Lua
-- state, `request` and `response` alternate, so each response is paired with its own request's
-- start. (wrk's latency histogram could not be used instead: wrk 4.1 corrects it for
-- coordinated omission with synthetic samples, and it covers the warm-up.)
--
-- Thread i writes `samples-<i>.txt` to DIR: "start_us end_us status" per response, both times
-- CLOCK_MONOTONIC microseconds (Python's `time.perf_counter` clock on Linux), so the bench can
-- keep the responses completed inside its measurement window. When a share runs out the thread
-- stops (sending nothing more) and reports `exhausted`; `done` prints one line
-- "wrk-result {json}" with each thread's count of bodies sent and whether it ran out.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

-- Main state: the threads, to read their counters in `done`.
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

-- Thread states. `id` is set by `setup`; `sent` and `exhausted` are read back by `done`, so
-- they are globals.
sent, exhausted = 0, false
local requests, next_i, started, out = {}, 1, nil, nil
local verifying = false

function init(args)
  local dir, count = args[1], tonumber(args[2])
  assert(id < count, "more wrk threads than shares")
  for line in io.lines(string.format("%s/bodies-%d.txt", dir, id)) do
    if #line > 0 then
      requests[#requests + 1] = wrk.format(nil, nil, nil, line)
    end
  end
  assert(#requests > 0, "an empty share")
  out = assert(io.open(string.format("%s/samples-%d.txt", dir, id), "w"))
  out:setvbuf("full")
  -- wrk calls thread 0's `request` once before the run to check the request it builds, and
  -- never sends that one: it must not use up a body.
  verifying = id == 0
  if id == count - 1 then
    -- Every share is loaded; wrk starts its clock now. stderr is unbuffered.
    io.stderr:write("wrk-ready\n")
  end
end

function request()
  if verifying then
    verifying = false
    return requests[next_i]
  end
  local r = requests[next_i]
  if r == nil then
    -- Out of bodies: send nothing (an empty write) and end this thread's event loop.
    exhausted = true
    wrk.thread:stop()
    return ""
  end
  requests[next_i] = nil
  next_i = next_i + 1
  sent = sent + 1
  started = now_us()
  return r
end

function response(status, headers, body)
  -- Buffered: the C library flushes it when wrk exits.
  out:write(string.format("%.0f %.0f %d\n", started, now_us(), status))
end

function done(summary, latency, requests)
  local parts = {}
  for _, t in ipairs(threads) do
    parts[#parts + 1] = string.format(
      '{"sent": %d, "exhausted": %s}', t:get("sent"), tostring(t:get("exhausted"))
    )
  end
  local e = summary.errors
  io.write(string.format(
    'wrk-result {"requests": %d, "errors": {"connect": %d, "read": %d, "write": %d, '
      .. '"status": %d, "timeout": %d}, "threads": [%s]}\n',
    summary.requests, e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ", ")
  ))
end
