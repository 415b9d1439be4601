-- Path helpers for recipes (pure string functions, '/' separated).
--
--   local path = require "path"
--   path.join("/usr", "local/bin")  --> "/usr/local/bin"
--   path.basename("src/main.c")     --> "main.c"

local M = {}

local function check(s, fn)
	if type(s) ~= "string" then
		error(("path.%s: expected a string, got %s"):format(fn, type(s)), 3)
	end
	return s
end

-- Join parts with single '/'; an absolute part restarts the path.
function M.join(...)
	local out = ""
	for i = 1, select("#", ...) do
		local p = check((select(i, ...)), "join")
		if p:sub(1, 1) == "/" or out == "" then
			out = p
		elseif p ~= "" then
			out = out:gsub("/+$", "") .. "/" .. p
		end
	end
	return out
end

function M.basename(p)
	p = check(p, "basename"):gsub("/+$", "")
	if p == "" then
		return "/"
	end
	return (p:match("[^/]*$"))
end

function M.dirname(p)
	p = check(p, "dirname"):gsub("/+$", "")
	local d = p:match("^(.*)/[^/]*$")
	if d == nil then
		return "."
	end
	if d == "" then
		return "/"
	end
	return d
end

-- "name.tar.gz" -> ".gz"; "" when there is no extension.
function M.ext(p)
	return (M.basename(check(p, "ext")):match("^.+(%.[^.]*)$")) or ""
end

return M
