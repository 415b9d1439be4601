-- The Lua side of the recipe environment.  Runs once, in the sandbox, before
-- the recipe; everything it defines is a global of the recipe.
--
-- pairs() iterates in sorted key order: Lua's own order depends on a hash
-- seed that changes from run to run, and a recipe must evaluate to the same
-- plan every time.  Keys sort numbers first, then strings, then booleans
-- (false first); other keys (tables, functions) come last in an unspecified
-- order.  next() keeps Lua's raw order.

local next, type, rawget, getmetatable, error = next, type, rawget, getmetatable, error
local sort = table.sort

local rank = { number = 1, string = 2, boolean = 3 }

local function key_less(a, b)
	local ta, tb = type(a), type(b)
	local ra, rb = rank[ta] or 4, rank[tb] or 4
	if ra ~= rb then
		return ra < rb
	end
	if ra == 1 or ra == 2 then
		return a < b
	end
	if ra == 3 then
		return a == false and b == true
	end
	return false
end

function pairs(t)
	local mt = getmetatable(t)
	if type(mt) == "table" then
		local mp = rawget(mt, "__pairs")
		if mp ~= nil then
			local f, s, c = mp(t)
			return f, s, c
		end
	end
	if type(t) ~= "table" then
		error(("bad argument #1 to 'pairs' (table expected, got %s)"):format(type(t)), 2)
	end
	local keys, n = {}, 0
	for k in next, t do
		n = n + 1
		keys[n] = k
	end
	sort(keys, key_less)
	local i = 0
	return function(tbl)
		while true do
			i = i + 1
			local k = keys[i]
			if k == nil then
				return nil
			end
			-- a key removed during the traversal is skipped, as with next()
			local v = rawget(tbl, k)
			if v ~= nil then
				return k, v
			end
		end
	end, t, nil
end
