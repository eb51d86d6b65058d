-- wrk script: every request gets a URL of its own (the URL's path + thread number + counter), so
-- that nothing is shared or cached between requests. Deterministic: no randomness.
local threads = 0
local counter = 0

function setup(thread)
   thread:set("tid", threads)
   threads = threads + 1
end

request = function()
   counter = counter + 1
   return wrk.format("GET", wrk.path .. tid .. "-" .. counter)
end
