-- Shell helpers for recipes: quoting for run "..." strings.
--
--   local sh = require "sh"
--   run("echo " .. sh.quote(message))
--   run(sh.join { "install", "-m", "0755", src, dst })

local M = {}

local function check(s, what, level)
	if type(s) ~= "string" and type(s) ~= "number" then
		error(("sh.%s: expected a string, got %s"):format(what, type(s)), level + 1)
	end
	return tostring(s)
end

-- One word for /bin/sh: unchanged when it only has safe characters,
-- otherwise in single quotes (with ' written as '\'').
function M.quote(s)
	s = check(s, "quote", 2)
	if s ~= "" and not s:find("[^%w%%+,./:=@_-]") then
		return s
	end
	return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- A command line from a list of words, each quoted as needed.
function M.join(words)
	if type(words) ~= "table" then
		error(("sh.join: expected a table, got %s"):format(type(words)), 2)
	end
	local out = {}
	for i = 1, #words do
		out[i] = M.quote(check(words[i], "join", 2))
	end
	return table.concat(out, " ")
end

-- Commands joined with " && " (nil entries are skipped).
function M.chain(cmds)
	if type(cmds) ~= "table" then
		error(("sh.chain: expected a table, got %s"):format(type(cmds)), 2)
	end
	local out = {}
	for i = 1, #cmds do
		if cmds[i] ~= nil then
			out[#out + 1] = check(cmds[i], "chain", 2)
		end
	end
	return table.concat(out, " && ")
end

return M
