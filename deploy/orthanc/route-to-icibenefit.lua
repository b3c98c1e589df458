-- Orthanc auto-routing to icibenefit.
--
-- When a study has been quiet for StableAge seconds, push its CT series and
-- their segmentations (SEG, RTSTRUCT) to the DICOM modality named ICIBENEFIT
-- (declare it in Orthanc's "DicomModalities").  Other series -- notably the
-- SR reports icibenefit sends back into the same study -- are never routed.
--
-- A study is routed again only when it gained CT/SEG/RTSTRUCT instances since
-- it was last routed (a late slice or a new segmentation): icibenefit then
-- runs a new version of the study.  The report icibenefit sends back makes
-- the study stable again but adds no routed instance, so nothing is re-sent.
-- The memory of routed studies lives in this Orthanc process; after an Orthanc
-- restart a study that becomes stable again is re-sent, which icibenefit
-- recognises as identical duplicates (no new run).
--
-- Routing is asynchronous (an Orthanc job).  RestApiPost on
-- /modalities/.../store is the supported way to send a whole study or series;
-- SendToModality only takes instance ids.

ICIBENEFIT_MODALITY = 'ICIBENEFIT'
ROUTED_MODALITIES = { CT = true, SEG = true, RTSTRUCT = true }
routedInstances = routedInstances or {}

function OnStableStudy(studyId, tags, metadata)
  local series = ParseJson(RestApiGet('/studies/' .. studyId .. '/series'))
  local resources = {}
  local instances = 0
  local hasCt = false
  for _, s in ipairs(series) do
    local modality = s['MainDicomTags']['Modality']
    if modality ~= nil and ROUTED_MODALITIES[modality] then
      table.insert(resources, s['ID'])
      instances = instances + #s['Instances']
      if modality == 'CT' then
        hasCt = true
      end
    end
  end
  if not hasCt or routedInstances[studyId] == instances then
    return
  end
  print('icibenefit routing: study ' .. studyId .. ' (' .. #resources .. ' series, '
        .. instances .. ' instances)')
  local request = { Resources = resources, Synchronous = false }
  RestApiPost('/modalities/' .. ICIBENEFIT_MODALITY .. '/store', DumpJson(request, true))
  routedInstances[studyId] = instances
end
