// The fleet's view of model quality (`ternctl watch --quality`): the quality
// sections of telemetry batches (telemetry.proto ModelQuality) from many
// devices, merged per model version, each version's class distribution
// compared with the previous version's.
//
// Batches carry counts cumulative since a boot epoch started, so the latest
// batch of each (device, boot epoch) holds that epoch's totals; a version's
// totals are the sums over every device and epoch. The previous version of
// a version is the next lower version number of the same model that has
// rows. The distance is the total variation distance of the two class
// distributions (half the L1 distance of the class shares, "other" counted
// as one class): 0 identical, 1 disjoint; a version is flagged when the
// distance is above the threshold.
//
// Thread-safety: none (one watcher thread).
#ifndef TERND_TELEMETRY_FLEET_QUALITY_H_
#define TERND_TELEMETRY_FLEET_QUALITY_H_

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "telemetry/telemetry.pb.h"

namespace ternd::telemetry {

class FleetQuality {
 public:
  struct VersionRow {
    std::string model, version;
    uint64_t devices = 0;  // devices with requests on this version
    uint64_t requests = 0, rows = 0;
    std::vector<uint64_t> classes;  // rows per class index
    uint64_t other = 0;             // rows of classes >= 64
    bool classifier = false;
    double mean_confidence = 0;   // classifiers
    double mean_output_norm = 0;  // other models
    bool has_shadow_agreement = false;
    double shadow_agreement = 0;
    // Against the previous version (empty: none to compare with).
    std::string previous_version;
    double distance = 0;
    bool flagged = false;
  };

  // Takes a batch's quality section; a batch older than the one already
  // held for its device and epoch is ignored. Returns whether it counted.
  bool Add(const std::string& device, const TelemetryBatch& batch);

  // Every version with requests, by model then ascending version.
  std::vector<VersionRow> Rows(double threshold) const;

 private:
  struct Latest {
    uint64_t sequence = 0;
    std::vector<ModelQuality> quality;
  };
  std::map<std::tuple<std::string, uint64_t>, Latest> latest_;
};

// Class shares distance (see above); `other` entries are extra classes.
double ClassDistance(const std::vector<uint64_t>& a, uint64_t a_other,
                     const std::vector<uint64_t>& b, uint64_t b_other);

}  // namespace ternd::telemetry

#endif  // TERND_TELEMETRY_FLEET_QUALITY_H_
