/* Fuzz target: the requests of Operations, Monitoring, Projections, ServerFeatures and
 * Gossip as the server decodes them (protobuf-c's unpack, then the fields the handlers
 * read), the same bytes tried as each type. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_srv.h"
#include "monitoring.pb-c.h"
#include "operations.pb-c.h"
#include "projections.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const ProtobufCMessageDescriptor *const types[] = {
        &event_store__client__operations__start_scavenge_req__descriptor,
        &event_store__client__operations__stop_scavenge_req__descriptor,
        &event_store__client__monitoring__stats_req__descriptor,
        &event_store__client__projections__statistics_req__descriptor,
        &event_store__client__projections__enable_req__descriptor,
        &event_store__client__projections__state_req__descriptor,
        &event_store__client__projections__disable_req__descriptor,
        &event_store__client__empty__descriptor,
    };
    volatile size_t sink = 0;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        ProtobufCMessage *m = fuzz_srv_unpack(types[i], data, size);
        if (!m) continue;
        if (types[i] == &event_store__client__operations__stop_scavenge_req__descriptor) {
            const EventStore__Client__Operations__StopScavengeReq *r = (const void *)m;
            if (r->options && r->options->scavenge_id) sink += strlen(r->options->scavenge_id);
        } else if (types[i] == &event_store__client__projections__statistics_req__descriptor) {
            const EventStore__Client__Projections__StatisticsReq *r = (const void *)m;
            if (r->options &&
                r->options->mode_case ==
                    EVENT_STORE__CLIENT__PROJECTIONS__STATISTICS_REQ__OPTIONS__MODE_NAME)
                sink += strlen(r->options->name);
        } else if (types[i] == &event_store__client__projections__state_req__descriptor) {
            const EventStore__Client__Projections__StateReq *r = (const void *)m;
            if (r->options) sink += strlen(r->options->name) + strlen(r->options->partition);
        } else if (types[i] == &event_store__client__projections__disable_req__descriptor) {
            const EventStore__Client__Projections__DisableReq *r = (const void *)m;
            if (r->options) sink += strlen(r->options->name) + (size_t)r->options->write_checkpoint;
        }
        protobuf_c_message_free_unpacked(m, NULL);
    }
    (void)sink;
    return 0;
}
