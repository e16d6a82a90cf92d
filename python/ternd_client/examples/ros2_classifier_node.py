"""A ROS 2 node that classifies sensor readings with ternd.

Subscribes to `readings` (std_msgs/Float32MultiArray, 16 values for the demo
model), asks the local ternd daemon, and publishes the class index on
`class` (std_msgs/Int32). Copy it into your package; it needs rclpy and
ternd_client (python/ternd_client), and the node's user in group `ternd`.

The node uses the asyncio-free blocking client from a single callback
thread: one connection, one request at a time, well under a millisecond per
call on a device. For many calls in flight use AsyncClient instead.
"""

import rclpy
from rclpy.node import Node
from std_msgs.msg import Float32MultiArray, Int32

from ternd_client import Client, TerndError


class ClassifierNode(Node):
    def __init__(self):
        super().__init__("ternd_classifier")
        self.declare_parameter("socket", "")
        self.declare_parameter("deadline_us", 5000)
        path = self.get_parameter("socket").get_parameter_value().string_value
        self.deadline_us = self.get_parameter("deadline_us").get_parameter_value().integer_value
        self.ternd = Client(path or None, timeout=1.0)
        info = self.ternd.model_info()
        self.input_name = info.inputs[0].name
        self.features = info.inputs[0].features
        self.get_logger().info(
            f"ternd serves {info.name} v{info.version} ({info.kernel}); "
            f"input {self.input_name}[{self.features}]")
        self.publisher = self.create_publisher(Int32, "class", 10)
        self.create_subscription(Float32MultiArray, "readings", self.on_readings, 10)

    def on_readings(self, msg: Float32MultiArray):
        if len(msg.data) != self.features:
            self.get_logger().warn(f"got {len(msg.data)} values, model takes {self.features}")
            return
        try:
            out = self.ternd.infer({self.input_name: list(msg.data)},
                                   outputs=["class"], deadline_us=self.deadline_us)
        except TerndError as e:
            # RESOURCE_EXHAUSTED / UNAVAILABLE / DEADLINE_EXCEEDED: skip this
            # reading; the next one comes soon.
            self.get_logger().warn(f"ternd: {e}")
            return
        self.publisher.publish(Int32(data=int(out["class"].values[0])))


def main():
    rclpy.init()
    node = ClassifierNode()
    try:
        rclpy.spin(node)
    finally:
        node.ternd.close()
        node.destroy_node()
        rclpy.shutdown()


if __name__ == "__main__":
    main()
