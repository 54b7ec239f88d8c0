package reviewflow.peers;

import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;

/** A topic's end offsets summed over its partitions, through an admin client. */
final class EndOffsets implements AutoCloseable {
    private final Admin admin;
    private final String topic;
    private List<TopicPartition> partitions;

    EndOffsets(String bootstrap, String topic) {
        Properties p = new Properties();
        p.setProperty(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        this.admin = Admin.create(p);
        this.topic = topic;
    }

    /** Creates the topic (single broker: replication 1) unless it exists. */
    void ensureTopic(int count) throws Exception {
        try {
            admin.createTopics(List.of(new NewTopic(topic, Optional.of(count), Optional.empty()))).all().get();
            Proc.log("created topic " + topic + " with " + count + " partitions");
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof TopicExistsException)) {
                throw new PeerException("cannot create topic " + topic + ": " + e.getCause(), e);
            }
        }
        partitions = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic).partitions().stream()
                .map(i -> new TopicPartition(topic, i.partition()))
                .collect(Collectors.toList());
    }

    long total() throws Exception {
        Map<TopicPartition, OffsetSpec> spec = partitions.stream()
                .collect(Collectors.toMap(tp -> tp, tp -> OffsetSpec.latest()));
        Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> r = admin.listOffsets(spec).all().get();
        return r.values().stream().mapToLong(ListOffsetsResult.ListOffsetsResultInfo::offset).sum();
    }

    @Override
    public void close() {
        admin.close();
    }
}
