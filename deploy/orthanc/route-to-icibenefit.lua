-- Orthanc auto-routing to icibenefit.
--
-- When a study has been quiet for StableAge seconds, push its CT series and
-- their segmentations (SEG, RTSTRUCT) to the DICOM modality named ICIBENEFIT
-- (declare it in Orthanc's "DicomModalities").  Other series -- notably the
-- SR reports icibenefit sends back into the same study -- are not routed, so
-- a report never triggers another run.  When the report's arrival makes the
-- study stable again, the CT/SEG are re-sent; icibenefit recognises identical
-- instances as duplicates and does not process the study again.
--
-- Routing is asynchronous (an Orthanc job, retried per Orthanc's settings):
-- RestApiPost on /modalities/.../store is the supported way to send a whole
-- study or series; SendToModality only takes instance ids.

ICIBENEFIT_MODALITY = 'ICIBENEFIT'
ROUTED_MODALITIES = { CT = true, SEG = true, RTSTRUCT = true }

function OnStableStudy(studyId, tags, metadata)
  local series = ParseJson(RestApiGet('/studies/' .. studyId .. '/series'))
  local resources = {}
  local hasCt = false
  for _, s in ipairs(series) do
    local modality = s['MainDicomTags']['Modality']
    if modality ~= nil and ROUTED_MODALITIES[modality] then
      table.insert(resources, s['ID'])
      if modality == 'CT' then
        hasCt = true
      end
    end
  end
  if not hasCt then
    return
  end
  print('icibenefit routing: study ' .. studyId .. ' (' .. #resources .. ' series)')
  local request = { Resources = resources, Synchronous = false }
  RestApiPost('/modalities/' .. ICIBENEFIT_MODALITY .. '/store', DumpJson(request, true))
end
