-- wrk script: send "Authorization: Bearer <token>", cycling through a file of tokens.
--
-- Usage: wrk ... -s tokens.lua http://127.0.0.1:PORT/route -- TOKENS_FILE
-- A file with one token gives the "hot token" case; a file with more tokens
-- than the server's verified cache holds gives a new (uncached) token on
-- every request, since cycling in order through more entries than an LRU
-- cache holds never hits.

local tokens = {}
local next_index = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      tokens[#tokens + 1] = line
    end
  end
  if #tokens == 0 then
    error("no tokens in " .. args[1])
  end
end

function request()
  next_index = next_index % #tokens + 1
  return wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. tokens[next_index] })
end

function done(summary, latency, requests)
  -- One machine-readable line for run.py; wrk's own report stays above it.
  local errors = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d status_errors=%d socket_errors=%d\n",
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout))
end
