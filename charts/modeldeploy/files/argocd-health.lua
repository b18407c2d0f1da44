-- Argo CD health check for modeldeploy.io/ModelDeployment.
-- Install it as argocd-cm's `resource.customizations.health.modeldeploy.io_ModelDeployment`
-- (see docs/argocd.md). Plain Lua 5.1, as Argo CD's gopher-lua runs it.
--
--   no status yet, or metadata.generation > status.observedGeneration  -> Progressing
--   condition Ready=False with reason InvalidSpec                      -> Degraded
--   phase Paused                                                       -> Suspended
--   phase RolledBack, Failed or Degraded                               -> Degraded
--   phase Succeeded                                                    -> Healthy
--   anything else (Pending, Progressing, Promoting, no phase)          -> Progressing
--
-- An evaluation that did not pass (status.evaluation) is added to the message of a
-- rolled-back or paused rollout, with its score, so the app's view says why without a
-- click: "...; evaluation Fail: 30/50 passed (score 0.60)". A mirror of the revision in
-- flight (status.mirror) adds the extra upstream cost it has caused so far.
local hs = {}

-- Numbers arrive as floats from Argo CD; print them as integers.
local function int(n)
  return string.format("%d", n)
end

local function invalidSpec(status, generation)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == "Ready" and c.status == "False" and c.reason == "InvalidSpec" then
      -- A condition about an older generation says nothing about the current spec.
      if c.observedGeneration == nil or generation == nil or c.observedGeneration >= generation then
        return c
      end
    end
  end
  return nil
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local status = obj.status

if status == nil then
  hs.status = "Progressing"
  if generation ~= nil then
    hs.message = "waiting for the operator to observe generation " .. int(generation)
  else
    hs.message = "waiting for the operator to observe the resource"
  end
  return hs
end

local invalid = invalidSpec(status, generation)
if invalid ~= nil then
  hs.status = "Degraded"
  if invalid.message ~= nil and invalid.message ~= "" then
    hs.message = invalid.message
  else
    hs.message = "the spec is invalid"
  end
  return hs
end

if generation ~= nil and (status.observedGeneration == nil or generation > status.observedGeneration) then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. int(generation)
  return hs
end

local phase = status.phase
local message = status.message
if message == nil or message == "" then
  if phase ~= nil then
    message = "phase " .. phase
  else
    message = "waiting for the operator"
  end
end

local evaluation = status.evaluation
if evaluation ~= nil and evaluation.verdict ~= nil and evaluation.verdict ~= "Pass"
    and (phase == "Paused" or phase == "RolledBack") then
  local text = "evaluation " .. evaluation.verdict .. ": " .. int(evaluation.passed or 0) .. "/"
    .. int(evaluation.cases or 0) .. " passed"
  if evaluation.score ~= nil then
    text = text .. string.format(" (score %.2f)", evaluation.score)
  end
  message = message .. "; " .. text
end
local mirror = status.mirror
if mirror ~= nil and mirror.revision == status.canaryRevision and mirror.costUsd ~= nil then
  message = message .. string.format("; mirror extra upstream cost $%.4f", mirror.costUsd)
end

if phase == "Paused" then
  hs.status = "Suspended"
  if (status.message == nil or status.message == "") and status.pauseReason ~= nil then
    message = "paused: " .. status.pauseReason
  end
elseif phase == "RolledBack" or phase == "Failed" or phase == "Degraded" then
  hs.status = "Degraded"
elseif phase == "Succeeded" then
  hs.status = "Healthy"
else
  hs.status = "Progressing"
end
hs.message = message
return hs
