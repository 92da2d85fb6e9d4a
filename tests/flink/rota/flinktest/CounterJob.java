package rota.flinktest;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichMapFunction;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.api.connector.source.util.ratelimit.RateLimiterStrategy;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.RestartStrategyOptions;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;

/**
 * An unbounded keyed counter whose progress can be read from outside the cluster.
 *
 * <p>A rate-limited generator feeds numbers, keyed by {@code n % KEYS}; each key counts its
 * records in keyed state, and a sink writes to a file {@code "<max> <first>\n"}: the highest count
 * seen, and the first count this run of the sink saw. The counts live in state, so after
 * stop-with-savepoint and a run from that savepoint {@code first} is the stopped run's last
 * {@code max} (or one more: the keys take turns); a run that did not restore writes
 * {@code first} 1. Every operator has a stable uid so that a savepoint maps back onto the same
 * graph.
 *
 * <p>Arguments: {@code --out PATH} (required), {@code --rate N} records per second (default
 * 200), {@code --restarts N} attempts of a fixed-delay restart strategy (default 0: a failure,
 * such as its TaskManager dying, fails the job at once).
 */
public final class CounterJob {
    static final int KEYS = 4;

    public static void main(String[] args) throws Exception {
        String out = null;
        double rate = 200;
        int restarts = 0;
        for (int i = 0; i < args.length; i++) {
            String value = i + 1 < args.length ? args[i + 1] : null;
            switch (args[i]) {
                case "--out": out = value; i++; break;
                case "--rate": rate = Double.parseDouble(value); i++; break;
                case "--restarts": restarts = Integer.parseInt(value); i++; break;
                default: throw new IllegalArgumentException("unknown argument " + args[i]);
            }
        }
        if (out == null) {
            throw new IllegalArgumentException("--out PATH is required");
        }

        Configuration conf = new Configuration();
        if (restarts == 0) {
            conf.set(RestartStrategyOptions.RESTART_STRATEGY, "none");
        } else {
            conf.set(RestartStrategyOptions.RESTART_STRATEGY, "fixed-delay");
            conf.set(RestartStrategyOptions.RESTART_STRATEGY_FIXED_DELAY_ATTEMPTS, restarts);
            conf.set(RestartStrategyOptions.RESTART_STRATEGY_FIXED_DELAY_DELAY, java.time.Duration.ofSeconds(1));
        }
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);

        DataGeneratorSource<Long> source = new DataGeneratorSource<>(
                n -> n, Long.MAX_VALUE, RateLimiterStrategy.perSecond(rate), Types.LONG);
        env.fromSource(source, WatermarkStrategy.noWatermarks(), "numbers")
                .uid("numbers")
                .keyBy(n -> n % KEYS, Types.LONG)
                .map(new Count())
                .uid("count")
                .name("count")
                .sinkTo(new MaxCountFile(out))
                .uid("max-count-file")
                .name("max-count-file")
                .setParallelism(1);
        env.execute("rota-test-counter");
    }

    /** Counts the records of each key in keyed state; emits the key's new count. */
    static final class Count extends RichMapFunction<Long, Long> {
        private transient ValueState<Long> count;

        @Override
        public void open(OpenContext context) {
            count = getRuntimeContext().getState(new ValueStateDescriptor<>("count", Types.LONG));
        }

        @Override
        public Long map(Long n) throws Exception {
            Long c = count.value();
            long next = (c == null ? 0 : c) + 1;
            count.update(next);
            return next;
        }
    }

    /**
     * Writes the highest count it has seen and the first one, to a file replaced atomically (a
     * temporary file and a rename) at most every 200 ms, so a reader never sees a torn line.
     */
    static final class MaxCountFile implements Sink<Long> {
        private final String path;

        MaxCountFile(String path) {
            this.path = path;
        }

        @Override
        public SinkWriter<Long> createWriter(WriterInitContext context) {
            return new Writer(Paths.get(path));
        }
    }

    static final class Writer implements SinkWriter<Long> {
        private static final long INTERVAL_MS = 200;
        private final Path path;
        private final Path tmp;
        private long max;
        private long first = -1;
        private long written = -1;
        private long lastWrite;

        Writer(Path path) {
            this.path = path;
            this.tmp = path.resolveSibling(path.getFileName() + ".tmp");
        }

        @Override
        public void write(Long count, Context context) throws IOException {
            if (first < 0) {
                first = count;
            }
            max = Math.max(max, count);
            long now = System.currentTimeMillis();
            if (now - lastWrite >= INTERVAL_MS) {
                publish();
                lastWrite = now;
            }
        }

        @Override
        public void flush(boolean endOfInput) throws IOException {
            publish();
        }

        @Override
        public void close() throws IOException {
            publish();
        }

        private void publish() throws IOException {
            if (max == written) {
                return;
            }
            Files.write(tmp, (max + " " + first + "\n").getBytes(StandardCharsets.UTF_8));
            Files.move(tmp, path, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            written = max;
        }
    }
}
