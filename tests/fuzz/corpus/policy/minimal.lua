return { name = "minimal", mode = "enforce", decide = function(req, ctx)
  if req.purpose == "" then return refuse("no purpose") end
  return allow("ok")
end }
