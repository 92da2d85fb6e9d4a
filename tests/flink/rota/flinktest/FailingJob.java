package rota.flinktest;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.source.util.ratelimit.RateLimiterStrategy;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.RestartStrategyOptions;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;

/**
 * A job that is accepted and then fails on its first record, with no restarts: the job ends
 * FAILED and its exceptions name {@link Boom}'s message. No arguments.
 */
public final class FailingJob {
    public static void main(String[] args) throws Exception {
        Configuration conf = new Configuration();
        conf.set(RestartStrategyOptions.RESTART_STRATEGY, "none");
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
        DataGeneratorSource<Long> source = new DataGeneratorSource<>(
                n -> n, Long.MAX_VALUE, RateLimiterStrategy.perSecond(10), Types.LONG);
        env.fromSource(source, WatermarkStrategy.noWatermarks(), "numbers")
                .uid("numbers")
                .map(new Boom())
                .uid("boom")
                .name("boom")
                .sinkTo(new DiscardingSink<>())
                .uid("discard");
        env.execute("rota-test-failing");
    }

    static final class Boom implements MapFunction<Long, Long> {
        @Override
        public Long map(Long n) {
            throw new IllegalStateException("rota test job fails on purpose at record " + n);
        }
    }
}
