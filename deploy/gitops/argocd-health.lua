-- Argo CD health check for optimodel.io/OptimizedModel (resource.customizations.health.optimodel.io_OptimizedModel).
-- Reads only what the operator writes for people and tools: observedGeneration, the Kubernetes-style
-- conditions (Ready, Progressing, Degraded, Stalled) and the rollout's phase and reason.
--   Degraded    Stalled or Degraded True: an invalid spec, a refused revision, a rollback, an abort,
--               inputs drifting beyond the evaluated range; the message says why
--   Suspended   a canary holding because its analyses have no data (no traffic, too few requests): it
--               neither promotes nor rolls back until data comes or a person runs optimodel promote/abort
--   Healthy     Ready True: the spec's revision serves all traffic
--   Progressing anything else: not yet observed, optimizing, deploying, a canary stepping forward
local hs = {}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

if obj.status == nil or obj.status.observedGeneration == nil or obj.metadata == nil
    or obj.metadata.generation == nil or obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest generation"
  return hs
end

local stalled = condition("Stalled")
local degraded = condition("Degraded")
if is_true(stalled) or is_true(degraded) then
  local c = is_true(degraded) and degraded or stalled
  hs.status = "Degraded"
  hs.message = (c.reason or "") .. ": " .. (c.message or "")
  return hs
end

if obj.status.rolloutPhase == "Canary" and obj.status.rolloutReason == "AnalysisNoData" then
  hs.status = "Suspended"
  hs.message = obj.status.rolloutMessage or "canary holding: its analyses have no data"
  return hs
end

if is_true(condition("Ready")) then
  hs.status = "Healthy"
  hs.message = obj.status.message or ""
  return hs
end

hs.status = "Progressing"
hs.message = obj.status.message or ""
return hs
